//! A JSON object's top level with its values left as text until one is read.
//!
//! The classifier reads a handful of an answer's fields (`status`, `id`, `output`, `message`, …);
//! building the whole tree of every answer would allocate for every key and string in it (a real
//! answer's `meta` alone echoes the whole request). Here the keys are borrowed from the body, each
//! value is a slice of it, syntax-checked but not built, and a value is built only when asked for.
//! Reading it is as strict as parsing the whole body into a `serde_json::Value`: the same bodies
//! are refused (bad syntax or UTF-8, trailing bytes, not an object), and of duplicate keys the
//! last one counts. One difference: a field nested deeper than serde_json's 128 levels no longer
//! refuses the whole body (skipping a value is iterative, so it costs no stack); that field alone
//! reads as absent.
//!
//! [`Text`] reads any value and keeps it only when it is a string: the keys here, and the few
//! request fields the proxy reads (`proxy::inspect`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// The top level of a JSON object.
pub(super) struct Object<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Object<'a> {
    /// The object `body` holds (a UTF-8 byte order mark skipped), or `None` when it holds
    /// anything else or is not JSON.
    pub(super) fn parse(body: &'a [u8]) -> Option<Object<'a>> {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        serde_json::from_slice(body).ok()
    }

    /// The value of `key`, built (the last one, if the key repeats).
    pub(super) fn get(&self, key: &str) -> Option<Value> {
        let (_, raw) = self.fields.iter().rev().find(|(k, _)| k == key)?;
        serde_json::from_str(raw.get()).ok()
    }

    /// Whether the object has `key`.
    pub(super) fn has(&self, key: &str) -> bool {
        self.fields.iter().any(|(k, _)| k == key)
    }
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8).min(32));
                // A JSON key is a string: `Text` always holds it.
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    fields.push((key.unwrap_or_default(), map.next_value::<&'de RawValue>()?));
                }
                Ok(Object { fields })
            }
        }
        d.deserialize_map(Fields)
    }
}

/// Any JSON value, kept when it is a string (borrowed from the input unless it has escapes).
pub(crate) struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(Any)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The whole tree, as the classifier built it before.
    fn tree(body: &[u8]) -> Option<Value> {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        serde_json::from_slice::<Value>(body).ok().filter(Value::is_object)
    }

    fn agree(body: &[u8]) {
        let (object, tree) = (Object::parse(body), tree(body));
        assert_eq!(object.is_some(), tree.is_some(), "{}", String::from_utf8_lossy(body));
        if let (Some(object), Some(Value::Object(map))) = (object, tree) {
            for (k, v) in &map {
                assert_eq!(object.get(k).as_ref(), Some(v), "{k} in {}", String::from_utf8_lossy(body));
                assert!(object.has(k));
            }
            assert_eq!(object.get("absent"), None);
        }
    }

    #[test]
    fn reads_as_the_whole_tree_would() {
        for body in [
            &br#"{"status":"success","id":91753437,"generationTime":1.06,"output":["https://x/0.png"]}"#[..],
            br#"{"st\u0061tus":"error","message":{"init_image":["is required"]},"status":"processing"}"#,
            b"\xEF\xBB\xBF{\"status\":\"success\"}",
            br#"{"meta":{"prompt":"a \"quoted\" prompt","n":[1,2,{"deep":null}]},"eta":"12.5"}"#,
            br#"{}"#,
            br#"[]"#,
            br#""status""#,
            br#"{"status":"success"} trailing"#,
            br#"{"status":"success""#,
            b"{\"status\":\"\xff\"}",
            br#"{"a":1,"a":2}"#,
        ] {
            agree(body);
        }
        // Nesting past serde_json's limit: only that field is unreadable.
        let deep = format!("{{\"status\":\"success\",\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        let object = Object::parse(deep.as_bytes()).expect("skipped, not refused");
        assert_eq!((object.get("status"), object.get("a")), (Some(Value::from("success")), None));
    }

    proptest! {
        #[test]
        fn reads_any_text_as_the_whole_tree_would(body in r#"\{("[a-z]{1,3}":(-?[0-9]{1,3}|"[a-z\\"]{0,4}"|\[\]|\{\}|null|true),?){0,5}\}?.?"#) {
            agree(body.as_bytes());
        }
    }
}
