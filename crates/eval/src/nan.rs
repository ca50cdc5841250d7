//! JSON has no NaN: these serde helpers write NaN (a class absent from the test set)
//! as `null` and read `null` back as NaN, so reports round-trip.

use serde::{Deserialize, Deserializer, Serializer};

/// For `f64` fields: `#[serde(with = "crate::nan::one")]`.
pub mod one {
    use super::*;

    /// NaN as null.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_none()
        } else {
            s.serialize_f64(*v)
        }
    }

    /// null as NaN.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// For `Vec<f64>` fields: `#[serde(with = "crate::nan::many")]`.
pub mod many {
    use super::*;
    use serde::Serialize;

    /// NaN entries as null.
    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(|x| (!x.is_nan()).then_some(*x)).collect::<Vec<Option<f64>>>().serialize(s)
    }

    /// null entries as NaN.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<Option<f64>>::deserialize(d)?.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }
}
