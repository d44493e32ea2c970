//! TEMPORARY STUB — replaced by the canonical JSON module.
#![allow(missing_docs, unreachable_pub)]
use std::sync::Arc;
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Json(Arc<str>);
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError(String);
impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for JsonError {}
impl Json {
    pub fn parse(input: &[u8]) -> Result<Json, JsonError> {
        let v: serde_json::Value =
            serde_json::from_slice(input).map_err(|e| JsonError(e.to_string()))?;
        Ok(Self::from_value(&v))
    }
    pub fn from_value(v: &serde_json::Value) -> Json {
        Json(Arc::from(v.to_string()))
    }
    pub fn null() -> Json {
        Json(Arc::from("null"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
    pub fn is_null(&self) -> bool {
        &*self.0 == "null"
    }
    pub fn is_object(&self) -> bool {
        self.0.starts_with('{')
    }
    pub fn is_empty_object(&self) -> bool {
        &*self.0 == "{}"
    }
}
impl From<f64> for Json {
    fn from(v: f64) -> Json {
        Json::from_value(&serde_json::json!(v))
    }
}
impl From<&str> for Json {
    fn from(v: &str) -> Json {
        Json::from_value(&serde_json::json!(v))
    }
}
impl From<i64> for Json {
    fn from(v: i64) -> Json {
        Json::from_value(&serde_json::json!(v))
    }
}
