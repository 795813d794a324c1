//! Reference data carried by the agent: device models (transmit power, RSSI correction)
//! and the consultation centres of the 47 prefectures (`data/*.json`).

use std::sync::OnceLock;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Model {
    pub name: String,
    /// What the model advertises in its AEM, dBm.
    pub tx_power_dbm: i8,
    /// Added to the RSSI it measures (GAEN calibration).
    pub rssi_correction_db: i8,
}

#[derive(Deserialize)]
struct Models {
    models: Vec<Model>,
}

/// The model table; index 0 is the generic phone.
pub fn models() -> &'static [Model] {
    static M: OnceLock<Vec<Model>> = OnceLock::new();
    M.get_or_init(|| {
        serde_json::from_str::<Models>(include_str!("../data/models.json"))
            .expect("data/models.json parses")
            .models
    })
}

/// A model by index (the generic phone for an unknown index).
pub fn model(index: u16) -> &'static Model {
    models().get(usize::from(index)).unwrap_or(&models()[0])
}

/// The index of the model named `name` (case-insensitive).
pub fn model_index(name: &str) -> Option<u16> {
    models()
        .iter()
        .position(|m| m.name.eq_ignore_ascii_case(name))
        .map(|i| i as u16)
}

#[derive(Clone, Debug, Deserialize)]
pub struct Centre {
    pub name_ja: String,
    pub name_en: String,
    pub address: Option<String>,
    pub phone: Option<String>,
    pub hours: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Prefecture {
    /// JIS X 0401 code, 1-47.
    pub code: u8,
    pub name_ja: String,
    pub name_en: String,
    pub centres: Vec<Centre>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NationalLine {
    pub name_ja: String,
    pub name_en: String,
    pub phone: String,
    pub hours: String,
}

#[derive(Deserialize)]
pub struct Prefectures {
    pub national_line: NationalLine,
    pub prefectures: Vec<Prefecture>,
}

pub fn prefectures() -> &'static Prefectures {
    static P: OnceLock<Prefectures> = OnceLock::new();
    P.get_or_init(|| {
        serde_json::from_str(include_str!("../data/prefectures.json"))
            .expect("data/prefectures.json parses")
    })
}

pub fn prefecture(code: u8) -> Option<&'static Prefecture> {
    prefectures().prefectures.iter().find(|p| p.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefecture_has_a_centre_and_the_national_line_is_there() {
        let p = prefectures();
        let codes: Vec<u8> = p.prefectures.iter().map(|p| p.code).collect();
        assert_eq!(codes, (1..=47).collect::<Vec<_>>());
        assert!(
            p.prefectures
                .iter()
                .all(|p| !p.centres.is_empty() && !p.name_ja.is_empty())
        );
        assert_eq!(prefecture(13).unwrap().name_en, "Tokyo");
        assert!(p.national_line.phone.starts_with("0120"));
    }

    #[test]
    fn models_have_names_and_the_generic_phone_comes_first() {
        assert!(models().len() >= 3);
        assert_eq!(model_index("generic phone"), Some(0));
        assert_eq!(model(9999).name, models()[0].name);
    }
}
