//! Bad input never panics or drops the connection: each gets its status and OpenAI's error shape.
//! Checked against the scripted fake generator: validation happens before any model is asked.

use crate::common;

use common::{fake, start_fake, MODEL};
use serde_json::{json, Value};

fn assert_error_shape(v: &Value) {
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e["code"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_gets_its_status_and_error_shape() {
    let n = start_fake(fake()).await;
    let raw = |path: &'static str, body: Vec<u8>| {
        let req = n
            .http
            .post(format!("{}{path}", n.base))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("/v1/chat/completions", b"{not json".to_vec(), 400),
        ("/v1/chat/completions", b"".to_vec(), 400),
        ("/v1/chat/completions", br#"{"model":"m","messages":"hello"}"#.to_vec(), 400),
        ("/v1/chat/completions", format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"x"}}],"temperature":"hot"}}"#).into_bytes(), 400),
        ("/v1/chat/completions", format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"x"}}],"max_tokens":-5}}"#).into_bytes(), 400),
        ("/v1/chat/completions", format!(r#"{{"model":"{MODEL}","messages":[]}}"#).into_bytes(), 400),
        ("/v1/completions", format!(r#"{{"model":"{MODEL}","prompt":42}}"#).into_bytes(), 400),
        ("/v1/completions", format!(r#"{{"model":"{MODEL}","prompt":"x","top_p":7}}"#).into_bytes(), 400),
        ("/v1/completions", vec![0xff, 0xfe, 0x00], 400),
        ("/v1/chat/completions", br#"{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}"#.to_vec(), 404),
        ("/v1/completions", br#"{"model":"no-such-model","prompt":"x"}"#.to_vec(), 404),
        ("/v1/nothing-here", b"{}".to_vec(), 404),
    ];
    for (path, body, want) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (status, v) = raw(path, body).await;
        assert_eq!(status, want, "{path} {shown}: {v}");
        assert_error_shape(&v);
    }
    // Unknown model errors name the model.
    let (_, v) = raw(
        "/v1/completions",
        br#"{"model":"no-such-model","prompt":"x"}"#.to_vec(),
    )
    .await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-such-model"));
    assert_eq!(v["error"]["code"], "model_not_found");
    // The server is still fine afterwards.
    let (status, _) = n
        .post_json(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": "Hi", "max_tokens": 2}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413() {
    let n = start_fake(fake()).await;
    let big = "a".repeat(mesh::http::openai::validate::MAX_BODY_BYTES + 1);
    let body = json!({"model": MODEL, "prompt": big});
    let r = n.post("/v1/completions", &body).await;
    assert_eq!(r.status(), 413);
    assert_error_shape(&r.json().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_is_405_in_error_shape() {
    let n = start_fake(fake()).await;
    let r = n
        .http
        .get(format!("{}/v1/chat/completions", n.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_error_shape(&r.json().await.unwrap());
}
