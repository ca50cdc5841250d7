//! Tiny-ImageNet readers on fixtures: an `.npz` written by numpy
//! (fixtures/make_tiny_npz.py) and a folder layout of JPEGs this test writes; and the
//! long-tailed counts of METHODS.md section 6.

use std::path::Path;

use robal_data::tiny_imagenet::{first_classes, read, read_folder, read_npz, TINY_SHAPE};
use robal_data::{Dataset, Profile, Split};

#[test]
fn npz_repack_reads_images_hwc_to_chw_and_labels() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny_imagenet_small.npz");
    let set = read_npz(path, 200).unwrap();
    assert_eq!(set.len(), 6);
    assert_eq!(set.shape(), TINY_SHAPE);
    assert_eq!(set.labels(), &[0, 3, 3, 199, 7, 0]);
    // The generator: R = (4x + 10i) % 256, G = (4y + 20i) % 256, B = (2(x + y) + 30i) % 256.
    for i in 0..6 {
        let img = set.image(i);
        for (y, x) in [(0usize, 0usize), (5, 9), (63, 63), (40, 17)] {
            let want = [(x * 4 + i * 10) % 256, (y * 4 + i * 20) % 256, ((x + y) * 2 + i * 30) % 256];
            for (c, w) in want.iter().enumerate() {
                assert_eq!(img[c * 4096 + y * 64 + x] as usize, *w, "image {i} ({y}, {x}) channel {c}");
            }
        }
    }
    assert_eq!(set.classes().train_counts()[3], 500, "the full set's nominal training count");
    let e = read_npz(path, 100).unwrap_err().to_string();
    assert!(e.contains("tiny_imagenet_small.npz") && e.contains("199"), "{e}");
    let e = read_npz("/nonexistent/train.npz", 200).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/train.npz"), "{e}");
}

fn write_jpeg(path: &Path, rgb: [u8; 3], size: u32, grey: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if grey {
        image::GrayImage::from_pixel(size, size, image::Luma([rgb[0]])).save(path).unwrap();
    } else {
        image::RgbImage::from_pixel(size, size, image::Rgb(rgb)).save(path).unwrap();
    }
}

#[test]
fn folder_layout_sorts_wnids_and_reads_val_annotations() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tiny-imagenet-200");
    // Created out of order: labels follow the sorted wnids n01 < n02 < n03.
    let colours = [("n03", [200u8, 30, 30]), ("n01", [30, 200, 30]), ("n02", [30, 30, 200])];
    for (wnid, rgb) in colours {
        for k in 0..2 {
            write_jpeg(&root.join("train").join(wnid).join("images").join(format!("{wnid}_{k}.JPEG")), rgb, 64, false);
        }
    }
    write_jpeg(&root.join("val/images/val_0.JPEG"), [30, 30, 200], 64, false);
    write_jpeg(&root.join("val/images/val_1.JPEG"), [120, 0, 0], 64, true);
    std::fs::write(
        root.join("val/val_annotations.txt"),
        "val_0.JPEG\tn02\t0\t0\t63\t63\nval_1.JPEG\tn03\t1\t2\t3\t4\n",
    )
    .unwrap();
    let train = read(tmp.path(), Split::Train).unwrap();
    assert_eq!(train.labels(), &[0, 0, 1, 1, 2, 2]);
    assert_eq!(train.classes().names(), &["n01".to_string(), "n02".into(), "n03".into()]);
    let mean = |img: &[u8], c: usize| img[c * 4096..(c + 1) * 4096].iter().map(|&v| v as f64).sum::<f64>() / 4096.0;
    for (i, want) in [(0usize, [30.0, 200.0, 30.0]), (4, [200.0, 30.0, 30.0])] {
        for (c, w) in want.iter().enumerate() {
            assert!((mean(train.image(i), c) - w).abs() < 4.0, "image {i} channel {c}: {}", mean(train.image(i), c));
        }
    }
    let val = read_folder(&root, Split::Test).unwrap();
    assert_eq!(val.labels(), &[1, 2]);
    // A greyscale JPEG becomes RGB with equal channels.
    let g = val.image(1);
    assert!((mean(g, 0) - 120.0).abs() < 4.0 && mean(g, 0) == mean(g, 1) && mean(g, 1) == mean(g, 2));
    // Bad input names the file.
    std::fs::write(root.join("val/val_annotations.txt"), "val_0.JPEG\tn99\t0\t0\t1\t1\n").unwrap();
    let e = read_folder(&root, Split::Test).unwrap_err().to_string();
    assert!(e.contains("val_annotations.txt:1") && e.contains("n99"), "{e}");
    write_jpeg(&root.join("train/n01/images/small.JPEG"), [1, 2, 3], 32, false);
    let e = read_folder(&root, Split::Train).unwrap_err().to_string();
    assert!(e.contains("small.JPEG") && e.contains("expected 64x64"), "{e}");
    let e = read(tmp.path().join("nothing"), Split::Train).unwrap_err().to_string();
    assert!(e.contains("train.npz") && e.contains("tiny-imagenet-200"), "{e}");
}

#[test]
fn long_tailed_counts_are_at_bsls_and_robustlts() {
    // AT-BSL: n_c = int(500 0.1^(c/199)): 500 494 488 ... 51 50 50, total 39,072.
    let c = Profile::Exp { ratio: 0.1 }.counts(200, 500.0).unwrap();
    assert_eq!(&c[..3], &[500, 494, 488]);
    assert_eq!(&c[197..], &[51, 50, 50]);
    assert_eq!(c.iter().sum::<usize>(), 39072);
    // RobustLT's 20-class variant: 500 ... 50.
    let c20 = Profile::Exp { ratio: 0.1 }.counts(20, 500.0).unwrap();
    assert_eq!((c20[0], c20[19]), (500, 50));
    // first_classes keeps the examples and names of the first k classes.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny_imagenet_small.npz");
    let sub = first_classes(&read_npz(path, 200).unwrap(), 20).unwrap();
    assert_eq!(sub.labels(), &[0, 3, 3, 7, 0]);
    assert_eq!(sub.classes().num_classes(), 20);
}
