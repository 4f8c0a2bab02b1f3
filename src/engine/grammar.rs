//! Structured output: JSON schemas turned into GBNF grammars for llama.cpp's grammar sampler.
//!
//! The converter is llama.cpp's own `json_schema_to_grammar` (common/json-schema-to-grammar.cpp,
//! through llama-cpp-2's `common` feature): the one llama-server uses for `response_format` and
//! `json_schema`, so a schema is enforced here exactly as llama-server enforces it, and its
//! grammars are known to parse with the grammar sampler of the same llama.cpp build.
//! Its C++ error text is not passed through the FFI, so the common mistakes (a schema that is not
//! an object, an unknown `type`) are checked here first, to name the problem in the 400.

use serde_json::Value;

/// Longest grammar accepted (raw `grammar` field or converted schema), in bytes: parsing a
/// grammar is CPU work done before the request is queued.
pub const MAX_GRAMMAR_BYTES: usize = 64 * 1024;

/// The schema of `response_format: {"type": "json_object"}`: any JSON object.
pub const JSON_OBJECT_SCHEMA: &str = r#"{"type":"object"}"#;

const TYPES: [&str; 7] = [
    "string", "number", "integer", "boolean", "object", "array", "null",
];

/// Keywords whose values are data, not schemas (a `{"type": "x"}` in them is no schema error).
const DATA_KEYWORDS: [&str; 5] = ["const", "enum", "default", "examples", "description"];

/// The GBNF grammar (root rule `root`) that `schema` allows, or what is wrong with the schema.
pub fn from_json_schema(schema: &Value) -> Result<String, String> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err("the JSON schema must be an object".into());
    }
    check_types(schema, "schema")?;
    let grammar = llama_cpp_2::json_schema_to_grammar(&schema.to_string())
        .map_err(|_| "the JSON schema is invalid or uses features llama.cpp's converter does not support (see llama.cpp's grammars/README.md)".to_owned())?;
    if grammar.len() > MAX_GRAMMAR_BYTES {
        return Err(format!(
            "the JSON schema's grammar is over {MAX_GRAMMAR_BYTES} bytes"
        ));
    }
    Ok(grammar)
}

/// Every `type` keyword names JSON types (a string or a list of them).
fn check_types(v: &Value, at: &str) -> Result<(), String> {
    match v {
        Value::Object(map) => {
            if let Some(t) = map.get("type") {
                let ok = |t: &Value| t.as_str().is_some_and(|t| TYPES.contains(&t));
                let valid = match t {
                    Value::Array(ts) => ts.iter().all(ok),
                    // `"properties": {"type": {...}}` is a property named "type".
                    Value::Object(_) => true,
                    t => ok(t),
                };
                if !valid {
                    return Err(format!(
                        "{at}.type: {t} is not a JSON type ({})",
                        TYPES.join(", ")
                    ));
                }
            }
            for (k, child) in map {
                if !DATA_KEYWORDS.contains(&k.as_str()) {
                    check_types(child, &format!("{at}.{k}"))?;
                }
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                check_types(child, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schema_becomes_a_grammar_with_a_root_rule() {
        let g = from_json_schema(&json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "mood": {"enum": ["happy", "sad"]}},
            "required": ["name", "mood"]
        }))
        .unwrap();
        assert!(g.contains("root ::="), "{g}");
        assert!(g.contains("happy"), "{g}");
        let any_object =
            from_json_schema(&serde_json::from_str(JSON_OBJECT_SCHEMA).unwrap()).unwrap();
        assert!(any_object.contains("root ::="), "{any_object}");
    }

    #[test]
    fn invalid_schemas_are_named() {
        let e = from_json_schema(&json!("string")).unwrap_err();
        assert!(e.contains("must be an object"), "{e}");
        let e =
            from_json_schema(&json!({"type": "object", "properties": {"a": {"type": "strnig"}}}))
                .unwrap_err();
        assert!(
            e.contains("schema.properties.a.type") && e.contains("strnig"),
            "{e}"
        );
        // A property called "type" and data that looks like a schema are fine.
        from_json_schema(
            &json!({"properties": {"type": {"type": "string"}}, "const": {"type": 1}}),
        )
        .unwrap();
        let e = from_json_schema(&json!({"$ref": "#/definitions/missing"})).unwrap_err();
        assert!(e.contains("invalid"), "{e}");
    }
}
