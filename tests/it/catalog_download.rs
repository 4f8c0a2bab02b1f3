//! Downloads against a local fake hub (tests/common_hub): cache layout, resume, retry,
//! verification, errors, offline mode, split models, and reuse of a `huggingface_hub` cache.

use crate::common::hub as common_hub;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common_hub::{synthetic, FakeHub, COMMIT};
use mesh::catalog::hub::RetryPolicy;
use mesh::catalog::progress::{Progress, ProgressEvent, Recorder};
use mesh::catalog::spec::parse_spec;
use mesh::catalog::{resolve_with, DownloadError, ResolveOptions, ResolvedModel};
use tempfile::TempDir;

const REPO: &str = "org/tiny-GGUF";
const FILE: &str = "tiny.Q4_0.gguf";

/// Options pointing at the fake hub and a fresh temp cache; nothing read from the environment.
fn options(hub: &FakeHub, cache: &TempDir) -> ResolveOptions {
    ResolveOptions {
        catalog: None,
        endpoint: hub.url(),
        token: None,
        offline: false,
        cache_dir: cache.path().join("hub"),
        progress: Progress::quiet(),
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
        verify: false,
    }
}

async fn fetch(
    spec: &str,
    opts: &ResolveOptions,
) -> (anyhow::Result<ResolvedModel>, Vec<ProgressEvent>) {
    let recorder = Recorder::default();
    let parsed = parse_spec(spec, |p| p.is_file()).expect("spec parses");
    let result = resolve_with(parsed, opts, &recorder).await;
    (result, recorder.events.into_inner().unwrap())
}

fn download_error(result: anyhow::Result<ResolvedModel>) -> DownloadError {
    let err = result.expect_err("download must fail");
    err.downcast::<DownloadError>().expect("a DownloadError")
}

fn repo_dir(opts: &ResolveOptions) -> PathBuf {
    opts.cache_dir.join("models--org--tiny-GGUF")
}

fn no_leftovers(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("blobs"))
        .map(|rd| {
            rd.flatten()
                .all(|e| !e.file_name().to_string_lossy().ends_with(".incomplete"))
        })
        .unwrap_or(true)
}

#[tokio::test]
async fn fresh_download_lands_in_the_huggingface_cache_layout() {
    let hub = FakeHub::start().await;
    let content = synthetic(300_000, 1);
    let sha = hub.add_file(REPO, FILE, content.clone());
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);

    let (result, events) = fetch(&format!("{REPO}/{FILE}"), &opts).await;
    let model = result.unwrap();

    let repo = repo_dir(&opts);
    assert_eq!(model.path, repo.join("snapshots").join(COMMIT).join(FILE));
    assert_eq!(model.name, "tiny-Q4_0");
    assert_eq!(
        std::fs::read_link(&model.path).unwrap(),
        Path::new("../../blobs").join(&sha)
    );
    assert_eq!(
        std::fs::read(repo.join("blobs").join(&sha)).unwrap(),
        content
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    assert_eq!(std::fs::read(&model.path).unwrap(), content);
    assert!(no_leftovers(&repo));
    assert!(events
        .iter()
        .any(|e| matches!(e, ProgressEvent::Verified { sha256, .. } if *sha256 == sha)));
    assert!(matches!(events.last(), Some(ProgressEvent::Done { .. })));
    assert_eq!(hub.blob_gets().len(), 1);
}

#[tokio::test]
async fn second_resolve_uses_the_cache_without_a_request() {
    let hub = FakeHub::start().await;
    hub.add_file(REPO, FILE, synthetic(10_000, 2));
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);
    let first = fetch(&format!("{REPO}/{FILE}"), &opts).await.0.unwrap();
    let before = hub.requests().len();
    let second = fetch(&format!("{REPO}/{FILE}"), &opts).await.0.unwrap();
    assert_eq!(first.path, second.path);
    assert_eq!(hub.requests().len(), before);
}

#[tokio::test]
async fn resumes_from_a_truncated_partial_file() {
    let hub = FakeHub::start().await;
    let content = synthetic(400_000, 3);
    let sha = hub.add_file(REPO, FILE, content.clone());
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);
    let blobs = repo_dir(&opts).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{sha}.incomplete")), &content[..123_456]).unwrap();

    let (result, events) = fetch(&format!("{REPO}/{FILE}"), &opts).await;
    let model = result.unwrap();

    assert_eq!(std::fs::read(&model.path).unwrap(), content);
    let gets = hub.blob_gets();
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].range.as_deref(), Some("bytes=123456-"));
    assert!(events.iter().any(|e| matches!(
        e,
        ProgressEvent::FileStart {
            resumed_from: 123_456,
            ..
        }
    )));
}

#[tokio::test]
async fn dropped_connection_is_retried_and_resumes() {
    let hub = FakeHub::start().await;
    let content = synthetic(1_000_000, 4);
    hub.add_file(REPO, FILE, content.clone());
    hub.drop_connections(2, 200_000);
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);

    let (result, events) = fetch(&format!("{REPO}/{FILE}"), &opts).await;
    let model = result.unwrap();

    assert_eq!(std::fs::read(&model.path).unwrap(), content);
    let gets = hub.blob_gets();
    assert_eq!(
        gets.len(),
        3,
        "two dropped transfers and one that completes"
    );
    assert_eq!(gets[0].range, None);
    let resumed_at = |r: &common_hub::Request| -> u64 {
        r.range
            .as_deref()
            .and_then(|v| v.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        resumed_at(&gets[1]) > 0,
        "second GET resumes: {:?}",
        gets[1].range
    );
    assert!(
        resumed_at(&gets[2]) > resumed_at(&gets[1]),
        "third GET resumes further"
    );
    let retries = events
        .iter()
        .filter(|e| matches!(e, ProgressEvent::Retry { .. }))
        .count();
    assert_eq!(retries, 2);
}

#[tokio::test]
async fn gives_up_after_the_retry_budget_and_keeps_the_partial() {
    let hub = FakeHub::start().await;
    let content = synthetic(500_000, 5);
    let sha = hub.add_file(REPO, FILE, content);
    hub.drop_connections(100, 50_000);
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);

    let err = download_error(fetch(&format!("{REPO}/{FILE}"), &opts).await.0);
    assert!(err.is_transient(), "{err}");
    assert_eq!(hub.blob_gets().len(), opts.retry.max_attempts as usize);
    let partial = repo_dir(&opts)
        .join("blobs")
        .join(format!("{sha}.incomplete"));
    // Each of the 4 attempts got up to 50,000 bytes before the cut; all of them stay on disk.
    let kept = std::fs::metadata(partial).unwrap().len();
    assert!(
        (50_000..=4 * 50_000).contains(&kept),
        "bytes kept for the next run: {kept}"
    );
}

#[tokio::test]
async fn corrupted_bytes_are_rejected_and_deleted() {
    let hub = FakeHub::start().await;
    let sha = hub.add_file(REPO, FILE, synthetic(200_000, 6));
    hub.state
        .corrupt
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);

    let err = download_error(fetch(&format!("{REPO}/{FILE}"), &opts).await.0);
    match &err {
        DownloadError::Corrupt { kind, expected, .. } => {
            assert_eq!(*kind, "sha256");
            assert_eq!(*expected, sha);
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(err.to_string().contains("deleted"));
    let repo = repo_dir(&opts);
    assert!(!repo.join("blobs").join(&sha).exists());
    assert!(no_leftovers(&repo));
    assert!(!repo.join("snapshots").join(COMMIT).join(FILE).exists());
}

#[tokio::test]
async fn corrupted_partial_on_disk_is_caught_by_the_hash() {
    let hub = FakeHub::start().await;
    let content = synthetic(200_000, 7);
    let sha = hub.add_file(REPO, FILE, content.clone());
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);
    let blobs = repo_dir(&opts).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut bad = content[..50_000].to_vec();
    bad[10] ^= 1;
    std::fs::write(blobs.join(format!("{sha}.incomplete")), bad).unwrap();

    let err = download_error(fetch(&format!("{REPO}/{FILE}"), &opts).await.0);
    assert!(matches!(err, DownloadError::Corrupt { .. }), "{err}");
    assert!(!blobs.join(format!("{sha}.incomplete")).exists());
    // The next attempt starts clean and succeeds.
    let model = fetch(&format!("{REPO}/{FILE}"), &opts).await.0.unwrap();
    assert_eq!(std::fs::read(model.path).unwrap(), content);
}

#[tokio::test]
async fn missing_file_is_a_404_error() {
    let hub = FakeHub::start().await;
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);
    let err = download_error(fetch(&format!("{REPO}/nope.gguf"), &opts).await.0);
    assert!(matches!(err, DownloadError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("404"));
}

#[tokio::test]
async fn gated_repo_needs_a_token() {
    let hub = FakeHub::start().await;
    let content = synthetic(50_000, 8);
    hub.add_file(REPO, FILE, content.clone());
    hub.gate(REPO, "hf_secret");
    let cache = TempDir::new().unwrap();
    let mut opts = options(&hub, &cache);

    let err = download_error(fetch(&format!("{REPO}/{FILE}"), &opts).await.0);
    assert!(
        matches!(
            err,
            DownloadError::Unauthorized {
                status: 401,
                had_token: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("set HF_TOKEN"), "{err}");

    opts.token = Some("hf_wrong".into());
    let err = download_error(fetch(&format!("{REPO}/{FILE}"), &opts).await.0);
    assert!(
        matches!(
            err,
            DownloadError::Unauthorized {
                had_token: true,
                ..
            }
        ),
        "{err}"
    );

    opts.token = Some("hf_secret".into());
    let model = fetch(&format!("{REPO}/{FILE}"), &opts).await.0.unwrap();
    assert_eq!(std::fs::read(model.path).unwrap(), content);
    let heads: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "HEAD")
        .collect();
    assert_eq!(
        heads.last().unwrap().auth.as_deref(),
        Some("Bearer hf_secret")
    );
    // The token goes to the hub only, never to the CDN host it redirects to.
    let gets = hub.blob_gets();
    assert!(
        !gets.is_empty() && gets.iter().all(|r| r.auth.is_none()),
        "{gets:?}"
    );
}

#[tokio::test]
async fn offline_uses_the_cache_and_explains_a_miss() {
    let hub = FakeHub::start().await;
    hub.add_file(REPO, FILE, synthetic(20_000, 9));
    hub.add_file(REPO, "other.gguf", synthetic(20_000, 10));
    let cache = TempDir::new().unwrap();
    let mut opts = options(&hub, &cache);
    let online = fetch(&format!("{REPO}/{FILE}"), &opts).await.0.unwrap();
    let before = hub.requests().len();

    opts.offline = true;
    let offline = fetch(&format!("{REPO}/{FILE}"), &opts).await.0.unwrap();
    assert_eq!(offline.path, online.path);
    let err = download_error(fetch(&format!("{REPO}/other.gguf"), &opts).await.0);
    assert!(
        matches!(err, DownloadError::OfflineNotCached { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HF_HUB_OFFLINE"));
    assert_eq!(hub.requests().len(), before, "offline mode sent a request");
}

#[tokio::test]
async fn transient_503_on_metadata_is_retried() {
    let hub = FakeHub::start().await;
    hub.add_file(REPO, FILE, synthetic(10_000, 11));
    hub.state
        .unavailable_left
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);
    fetch(&format!("{REPO}/{FILE}"), &opts).await.0.unwrap();
    let heads = hub.requests().iter().filter(|r| r.method == "HEAD").count();
    assert_eq!(heads, 3);
}

#[tokio::test]
async fn split_gguf_parts_download_in_order_into_one_snapshot() {
    let hub = FakeHub::start().await;
    let parts: Vec<Vec<u8>> = (0..3)
        .map(|i| synthetic(100_000 + i * 1000, 20 + i as u64))
        .collect();
    let names: Vec<String> = (1..=3)
        .map(|i| format!("Q4_0/big-Q4_0-{i:05}-of-00003.gguf"))
        .collect();
    for (n, c) in names.iter().zip(&parts) {
        hub.add_file(REPO, n, c.clone());
    }
    let cache = TempDir::new().unwrap();
    let catalog_path = cache.path().join("catalog.toml");
    let total: usize = parts.iter().map(Vec::len).sum();
    std::fs::write(
        &catalog_path,
        format!(
            "[[model]]\nname = \"Big-Q4_0\"\nrepo = \"{REPO}\"\nfiles = {names:?}\nsize = {total}\nparams = 100\n\
             quant = \"Q4_0\"\nfamily = \"big\"\ncontext = 4096\nlicense = \"mit\"\n"
        ),
    )
    .unwrap();
    let mut opts = options(&hub, &cache);
    opts.catalog = Some(catalog_path);

    let (result, events) = fetch("Big-Q4_0", &opts).await;
    let model = result.unwrap();

    assert_eq!(model.name, "Big-Q4_0");
    assert!(model.entry.is_some());
    let dir = repo_dir(&opts).join("snapshots").join(COMMIT).join("Q4_0");
    assert_eq!(model.path, dir.join("big-Q4_0-00001-of-00003.gguf"));
    for (n, c) in names.iter().zip(&parts) {
        let file = n.rsplit('/').next().unwrap();
        assert_eq!(&std::fs::read(dir.join(file)).unwrap(), c);
    }
    let order: Vec<String> = hub.blob_gets().iter().map(|r| r.path.clone()).collect();
    let want: Vec<String> = parts
        .iter()
        .map(|c| format!("/cdn/{}", common_hub::sha256_hex(c)))
        .collect();
    assert_eq!(order, want, "parts fetched in order");
    match &events[0] {
        ProgressEvent::Start {
            files, total_bytes, ..
        } => {
            assert_eq!(files.len(), 3);
            assert_eq!(*total_bytes, total as u64);
        }
        other => panic!("first event {other:?}"),
    }
    // A hub reference to the first part fetches the whole set (here: already cached).
    let again = fetch(&format!("{REPO}/{}", names[0]), &opts)
        .await
        .0
        .unwrap();
    assert_eq!(again.path, model.path);
}

#[tokio::test]
async fn catalog_sha256_is_enforced_too() {
    let hub = FakeHub::start().await;
    hub.add_file(REPO, FILE, synthetic(30_000, 30));
    let cache = TempDir::new().unwrap();
    let catalog_path = cache.path().join("catalog.toml");
    std::fs::write(
        &catalog_path,
        format!(
            "[[model]]\nname = \"Tiny-Q4_0\"\nrepo = \"{REPO}\"\nfiles = [\"{FILE}\"]\nsize = 30000\n\
             sha256 = \"{}\"\nparams = 100\nquant = \"Q4_0\"\nfamily = \"t\"\ncontext = 2048\nlicense = \"mit\"\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let mut opts = options(&hub, &cache);
    opts.catalog = Some(catalog_path);
    let err = download_error(fetch("Tiny-Q4_0", &opts).await.0);
    assert!(
        matches!(err, DownloadError::Corrupt { ref expected, .. } if *expected == "0".repeat(64)),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_catalog_name_suggests_close_matches() {
    let hub = FakeHub::start().await;
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);
    let err = download_error(fetch("SmolLM2-135M-Instruct-Q4", &opts).await.0);
    match &err {
        DownloadError::UnknownModel { suggestions, .. } => {
            assert_eq!(
                suggestions.first().map(String::as_str),
                Some("SmolLM2-135M-Instruct-Q4_1")
            )
        }
        other => panic!("expected UnknownModel, got {other}"),
    }
    assert!(hub.requests().is_empty());
}

#[cfg(unix)]
#[tokio::test]
async fn cache_laid_out_by_huggingface_hub_is_used_without_a_request() {
    // Exactly what `hf_hub_download` leaves behind: blob named by the LFS sha256, a relative
    // symlink from snapshots/{commit}/, refs/main holding the commit.
    let hub = FakeHub::start().await;
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);
    let content = synthetic(40_000, 40);
    let sha = common_hub::sha256_hex(&content);
    let repo = repo_dir(&opts);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(COMMIT)).unwrap();
    std::fs::write(repo.join("blobs").join(&sha), &content).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    std::os::unix::fs::symlink(
        format!("../../blobs/{sha}"),
        repo.join("snapshots").join(COMMIT).join(FILE),
    )
    .unwrap();

    let mut verify = opts.clone();
    verify.verify = true;
    let model = fetch(&format!("{REPO}/{FILE}"), &verify).await.0.unwrap();
    assert_eq!(std::fs::read(&model.path).unwrap(), content);
    assert!(hub.requests().is_empty(), "requests: {:?}", hub.requests());
}

#[tokio::test]
async fn plain_url_downloads_outside_the_hub_layout() {
    let hub = FakeHub::start().await;
    let content = synthetic(60_000, 50);
    let sha = hub.add_file(REPO, FILE, content.clone());
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);
    let url = format!("{}/cdn/{sha}", hub.url());
    hub.drop_connections(1, 10_000);
    let model = fetch(&url, &opts).await.0.unwrap();
    assert_eq!(std::fs::read(&model.path).unwrap(), content);
    assert!(model.path.starts_with(cache.path().join("mesh/url")));
    assert_eq!(hub.blob_gets().len(), 2, "dropped once, resumed once");
}

#[tokio::test]
async fn renamed_repo_redirect_on_the_hub_is_followed() {
    let hub = FakeHub::start().await;
    let content = synthetic(30_000, 60);
    hub.add_file("org/new-GGUF", FILE, content.clone());
    hub.rename(REPO, "org/new-GGUF");
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);
    let model = fetch(&format!("{REPO}/{FILE}"), &opts).await.0.unwrap();
    assert_eq!(std::fs::read(&model.path).unwrap(), content);
    // Cached under the name that was asked for, as huggingface_hub does.
    assert!(model.path.starts_with(repo_dir(&opts)));
    let heads: Vec<String> = hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "HEAD")
        .map(|r| r.path)
        .collect();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[1].starts_with("/org/new-GGUF/"));
}

#[tokio::test]
async fn resolved_model_memory_comes_from_the_gguf_header() {
    // A tiny but valid GGUF header: llama arch, 2 layers, 4 heads, 2 KV heads, 64-dim embeddings.
    let mut gguf = Vec::new();
    gguf.extend_from_slice(b"GGUF");
    gguf.extend_from_slice(&3u32.to_le_bytes());
    gguf.extend_from_slice(&0u64.to_le_bytes());
    let kvs: [(&str, Option<u32>, Option<&str>); 6] = [
        ("general.architecture", None, Some("llama")),
        ("llama.context_length", Some(1024), None),
        ("llama.block_count", Some(2), None),
        ("llama.embedding_length", Some(64), None),
        ("llama.attention.head_count", Some(4), None),
        ("llama.attention.head_count_kv", Some(2), None),
    ];
    gguf.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (key, num, text) in kvs {
        gguf.extend_from_slice(&(key.len() as u64).to_le_bytes());
        gguf.extend_from_slice(key.as_bytes());
        match (num, text) {
            (Some(n), _) => {
                gguf.extend_from_slice(&4u32.to_le_bytes());
                gguf.extend_from_slice(&n.to_le_bytes());
            }
            (_, Some(t)) => {
                gguf.extend_from_slice(&8u32.to_le_bytes());
                gguf.extend_from_slice(&(t.len() as u64).to_le_bytes());
                gguf.extend_from_slice(t.as_bytes());
            }
            _ => unreachable!(),
        }
    }
    gguf.extend_from_slice(&synthetic(10_000, 70));
    let hub = FakeHub::start().await;
    hub.add_file(REPO, FILE, gguf.clone());
    let cache = TempDir::new().unwrap();
    let model = fetch(&format!("{REPO}/{FILE}"), &options(&hub, &cache))
        .await
        .0
        .unwrap();

    let need = model.memory().unwrap();
    assert_eq!(need.weights_bytes, gguf.len() as u64);
    assert_eq!(need.train_ctx, 1024);
    // 2 layers × 2 KV heads × (16 + 16) dims × 2 bytes.
    assert_eq!(need.kv_bytes_per_token, 2 * 2 * 32 * 2);
    let ctx = mesh::catalog::plan_context(&need, None, 4, 1 << 40).unwrap();
    assert_eq!(
        ctx, 1024,
        "the training context, below the 4096 default cap"
    );
}

#[tokio::test]
async fn server_ignoring_range_restarts_from_zero_with_correct_bytes() {
    let hub = FakeHub::start().await;
    let content = synthetic(300_000, 80);
    let sha = hub.add_file(REPO, FILE, content.clone());
    hub.state
        .ignore_range
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let cache = TempDir::new().unwrap();
    let opts = options(&hub, &cache);
    let blobs = repo_dir(&opts).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{sha}.incomplete")), &content[..100_000]).unwrap();

    let model = fetch(&format!("{REPO}/{FILE}"), &opts).await.0.unwrap();

    assert_eq!(std::fs::read(&model.path).unwrap(), content);
    let gets = hub.blob_gets();
    assert_eq!(gets.len(), 1);
    assert_eq!(
        gets[0].range.as_deref(),
        Some("bytes=100000-"),
        "it asked to resume"
    );
}
