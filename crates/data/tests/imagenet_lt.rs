//! ImageNet-LT on a tiny tree of generated JPEGs.

use std::sync::Arc;

use candle_core::Device;
use image::{Rgb, RgbImage};
use rand::SeedableRng;
use robal_data::imagenet_lt::{classes_from_split, random_resized_window, read_split_file};
use robal_data::{AugmentRng, CropConfig, Dataset, ImageNetLt, Loader, LoaderConfig};

/// Class c's images are filled with one colour; sizes vary.
fn colour(c: u32) -> Rgb<u8> {
    Rgb([(40 * c + 20) as u8, (200 - 30 * c) as u8, 90])
}

fn make_tree(root: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let sizes = [(40u32, 30u32), (64, 64), (33, 50), (80, 45)];
    let mut train = String::new();
    let mut test = String::new();
    for c in 0..3u32 {
        let dir = root.join(format!("train/n0{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..(4 - c) {
            let (w, h) = sizes[(k as usize + c as usize) % 4];
            let img = RgbImage::from_pixel(w, h, colour(c));
            let rel = format!("train/n0{c}/img_{k}.JPEG");
            img.save_with_format(root.join(&rel), image::ImageFormat::Jpeg).unwrap();
            train.push_str(&format!("{rel} {c}\n"));
            if k == 0 {
                test.push_str(&format!("{rel} {c}\n"));
            }
        }
    }
    let (tr, te) = (root.join("ImageNet_LT_train.txt"), root.join("ImageNet_LT_test.txt"));
    std::fs::write(&tr, train).unwrap();
    std::fs::write(&te, test).unwrap();
    (tr, te)
}

#[test]
fn split_files_give_counts_and_decoded_crops() {
    let tmp = tempfile::tempdir().unwrap();
    let (train_file, test_file) = make_tree(tmp.path());
    let entries = read_split_file(&train_file, 3).unwrap();
    assert_eq!(entries.len(), 9);
    let classes = classes_from_split(&entries, 3, None).unwrap();
    assert_eq!(classes.train_counts(), [4, 3, 2]);
    let crop = CropConfig::standard(16);
    assert_eq!(crop.resize, 19);
    let test = ImageNetLt::open(tmp.path(), &test_file, classes.clone(), crop).unwrap();
    assert_eq!(test.len(), 3);
    let mut out = vec![0u8; test.shape().numel()];
    for i in 0..3 {
        test.write_example(i, None, &mut out).unwrap();
        let want = colour(i as u32);
        // A flat colour survives JPEG, resize and crop up to compression noise.
        for c in 0..3 {
            let plane = &out[c * 256..(c + 1) * 256];
            let mean = plane.iter().map(|&p| p as f64).sum::<f64>() / 256.0;
            assert!((mean - want.0[c] as f64).abs() < 4.0, "class {i} channel {c}: {mean}");
        }
    }
    let train = Arc::new(ImageNetLt::open(tmp.path(), &train_file, classes, crop).unwrap());
    let loader = Loader::new(train, LoaderConfig::train(4, 0), Device::Cpu).unwrap();
    let batches: Vec<_> = loader.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].images.dims(), &[4, 3, 16, 16]);
}

#[test]
fn random_resized_window_respects_scale_ratio_and_bounds() {
    let crop = CropConfig::standard(224);
    for s in 0..500u64 {
        let mut rng = AugmentRng::seed_from_u64(s);
        let (w0, h0) = (300 + (s as u32 % 7) * 40, 200 + (s as u32 % 5) * 50);
        let (x, y, w, h) = random_resized_window(w0, h0, &crop, &mut rng);
        assert!(x + w <= w0 && y + h <= h0 && w > 0 && h > 0);
        let area = (w * h) as f64 / (w0 * h0) as f64;
        let ratio = w as f64 / h as f64;
        // Rounding w and h moves area and ratio slightly past the nominal range.
        assert!(area > 0.07 && area <= 1.0, "area {area}");
        assert!(ratio > 0.70 && ratio < 1.42, "ratio {ratio}");
    }
    // A very wide image: no try fits, the fallback centre crop clamps the ratio to 4/3.
    let mut rng = AugmentRng::seed_from_u64(0);
    let (x, y, w, h) = random_resized_window(1000, 10, &CropConfig { scale: (1.0, 1.0), ..crop }, &mut rng);
    assert_eq!((w, h), (13, 10));
    assert_eq!((x, y), ((1000 - 13) / 2, 0));
}

#[test]
fn bad_split_lines_and_missing_images_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("split.txt");
    std::fs::write(&p, "a/b.JPEG 1\na/c.JPEG x\n").unwrap();
    let e = read_split_file(&p, 5).unwrap_err().to_string();
    assert!(e.contains("split.txt:2") && e.contains("\"x\""), "{e}");
    std::fs::write(&p, "a/b.JPEG 7\n").unwrap();
    let e = read_split_file(&p, 5).unwrap_err().to_string();
    assert!(e.contains("split.txt:1") && e.contains("label 7 is outside 0..5"), "{e}");
    std::fs::write(&p, "missing/x.JPEG 0\n").unwrap();
    let classes = robal_data::ClassInfo::new(vec!["a".into()], vec![1]).unwrap();
    let set = ImageNetLt::open(tmp.path(), &p, classes, CropConfig::standard(8)).unwrap();
    let mut out = vec![0u8; set.shape().numel()];
    let e = set.write_example(0, None, &mut out).unwrap_err().to_string();
    assert!(e.contains("missing/x.JPEG"), "{e}");
    std::fs::create_dir_all(tmp.path().join("missing")).unwrap();
    std::fs::write(tmp.path().join("missing/x.JPEG"), b"not a jpeg").unwrap();
    let e = set.write_example(0, None, &mut out).unwrap_err().to_string();
    assert!(e.contains("missing/x.JPEG") && e.contains("cannot decode"), "{e}");
}
