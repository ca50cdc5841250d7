//! Pillow's bilinear resize, pixel for pixel against Pillow 13.0.0
//! (fixtures/resize_bilinear.json, made by fixtures/make_resize_fixtures.py).

use robal_data::{resize_bilinear, ImageShape};
use sha2::{Digest, Sha256};

fn fixtures() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/resize_bilinear.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

/// The script's formula image: (x 37 + y 91 + c 53 + (x y) mod 17) mod 256.
fn formula(shape: ImageShape) -> Vec<u8> {
    let mut v = Vec::with_capacity(shape.numel());
    for c in 0..shape.channels {
        for y in 0..shape.height {
            for x in 0..shape.width {
                v.push(((x * 37 + y * 91 + c * 53 + (x * y) % 17) % 256) as u8);
            }
        }
    }
    v
}

fn cifar_first() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/cifar-10-partial/data_batch_1_first1017.bin");
    std::fs::read(path).expect("shared CIFAR records")[1..3073].to_vec()
}

fn numbers(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

#[test]
fn bilinear_resize_matches_pillow_up_and_down() {
    let f = fixtures();
    let mut checked = 0;
    for case in f["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let s = numbers(&case["shape"]);
        let shape = ImageShape::new(s[0], s[1], s[2]);
        let o = numbers(&case["out"]);
        let src = if case["source"] == "cifar" { cifar_first() } else { formula(shape) };
        let got = resize_bilinear(&src, shape, o[0], o[1]).unwrap();
        assert_eq!(got.len(), s[0] * o[0] * o[1], "{name}");
        if let Some(want) = case.get("output") {
            let want: Vec<u8> = numbers(want).into_iter().map(|v| v as u8).collect();
            let wrong = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(wrong, 0, "{name}: {wrong} of {} values differ from Pillow", want.len());
        } else {
            let first: Vec<u8> = numbers(&case["first_row"]).into_iter().map(|v| v as u8).collect();
            assert_eq!(got[..o[1]], first[..], "{name}: first row");
            let digest: String = Sha256::digest(&got).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(digest, case["sha256"].as_str().unwrap(), "{name}: bytes differ from Pillow's");
        }
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn resize_to_the_same_size_is_the_identity_and_bad_sizes_are_refused() {
    let shape = ImageShape::new(3, 8, 6);
    let img = formula(shape);
    assert_eq!(resize_bilinear(&img, shape, 8, 6).unwrap(), img);
    assert!(resize_bilinear(&img, shape, 0, 6).is_err());
    assert!(resize_bilinear(&img[1..], shape, 8, 6).unwrap_err().to_string().contains("bytes"));
}
