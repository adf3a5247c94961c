//! Typed access to the fields of one JSON record, with messages that name the field path and
//! what was found instead ("missing field `target_new`", "field `answers[1]` is a number,
//! expected a string"). The loaders use it instead of `serde` derives so that a bad record is
//! described precisely and skipped rather than failing the whole file.

use serde_json::{Map, Value};

/// A JSON object plus the path it was reached by (`""` at the top, `"requested_rewrite[2]."`
/// inside a list), so messages point at the exact field.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    at: String,
}

/// `a string`, `a number`, … for messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl<'a> Fields<'a> {
    /// The record itself must be an object.
    pub(crate) fn of(value: &'a Value) -> Result<Self, String> {
        Self::nested(value, String::new())
    }

    fn nested(value: &'a Value, at: String) -> Result<Self, String> {
        match value {
            Value::Object(map) => Ok(Self { map, at }),
            other => {
                let what = if at.is_empty() {
                    "the record".to_string()
                } else {
                    format!("field `{}`", at.trim_end_matches('.'))
                };
                Err(format!(
                    "{what} is {}, expected an object",
                    type_name(other)
                ))
            }
        }
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.at)
    }

    fn get(&self, key: &str) -> Result<&'a Value, String> {
        self.map
            .get(key)
            .ok_or_else(|| format!("missing field `{}`", self.path(key)))
    }

    fn as_str(&self, path: String, v: &'a Value) -> Result<&'a str, String> {
        v.as_str()
            .ok_or_else(|| format!("field `{path}` is {}, expected a string", type_name(v)))
    }

    /// A required string (may be empty).
    pub(crate) fn str(&self, key: &str) -> Result<&'a str, String> {
        self.as_str(self.path(key), self.get(key)?)
    }

    /// A required string that must not be blank: prompts and answers the metrics will use.
    pub(crate) fn text(&self, key: &str) -> Result<&'a str, String> {
        let s = self.str(key)?;
        if s.trim().is_empty() {
            return Err(format!("field `{}` is empty", self.path(key)));
        }
        Ok(s)
    }

    /// A required nested object.
    pub(crate) fn obj(&self, key: &str) -> Result<Fields<'a>, String> {
        Self::nested(self.get(key)?, format!("{}.", self.path(key)))
    }

    /// An optional nested object: missing or `null` is `None`.
    pub(crate) fn opt_obj(&self, key: &str) -> Result<Option<Fields<'a>>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Self::nested(v, format!("{}.", self.path(key))).map(Some),
        }
    }

    /// A required list.
    pub(crate) fn list(&self, key: &str) -> Result<&'a [Value], String> {
        let v = self.get(key)?;
        v.as_array().map(Vec::as_slice).ok_or_else(|| {
            format!(
                "field `{}` is {}, expected a list",
                self.path(key),
                type_name(v)
            )
        })
    }

    /// A required list of objects, each with its indexed path.
    pub(crate) fn objects(&self, key: &str) -> Result<Vec<Fields<'a>>, String> {
        self.list(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| Self::nested(v, format!("{}[{i}].", self.path(key))))
            .collect()
    }

    /// A required list of non-blank strings.
    pub(crate) fn texts(&self, key: &str) -> Result<Vec<String>, String> {
        self.list(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let path = format!("{}[{i}]", self.path(key));
                let s = self.as_str(path.clone(), v)?;
                if s.trim().is_empty() {
                    return Err(format!("field `{path}` is empty"));
                }
                Ok(s.to_string())
            })
            .collect()
    }

    /// An optional list of non-blank strings: missing or `null` is empty.
    pub(crate) fn opt_texts(&self, key: &str) -> Result<Vec<String>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(_) => self.texts(key),
        }
    }

    /// The keys of the object (for format-detection messages).
    pub(crate) fn keys(&self) -> Vec<&'a str> {
        self.map.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_name_the_field_path_and_the_type_found() {
        let v = json!({"a": "x", "n": 3, "blank": "  ", "o": {"s": 1}, "l": ["p", 2], "e": [""]});
        let f = Fields::of(&v).unwrap();
        assert_eq!(f.str("a").unwrap(), "x");
        assert_eq!(f.str("zz").unwrap_err(), "missing field `zz`");
        assert_eq!(
            f.str("n").unwrap_err(),
            "field `n` is a number, expected a string"
        );
        assert_eq!(f.text("blank").unwrap_err(), "field `blank` is empty");
        let o = f.obj("o").unwrap();
        assert_eq!(
            o.str("s").unwrap_err(),
            "field `o.s` is a number, expected a string"
        );
        assert_eq!(o.str("t").unwrap_err(), "missing field `o.t`");
        assert_eq!(
            f.obj("a").err().unwrap(),
            "field `a` is a string, expected an object"
        );
        assert_eq!(
            f.texts("l").unwrap_err(),
            "field `l[1]` is a number, expected a string"
        );
        assert_eq!(f.texts("e").unwrap_err(), "field `e[0]` is empty");
        assert_eq!(
            f.list("a").unwrap_err(),
            "field `a` is a string, expected a list"
        );
        assert!(f.opt_texts("zz").unwrap().is_empty());
        assert_eq!(
            Fields::of(&json!([1])).err().unwrap(),
            "the record is a list, expected an object"
        );
    }
}
