//! `mesh --auto --dry-run`: what `--auto` would do here and now, as a document — the mesh it
//! would join (or why it would start its own), the model it would serve and why, and the
//! catalog models it would pass over as too slow. Pure: the caller browses, scores and measures,
//! and prints the document (`cmd/dry_run.rs`); nothing is joined, downloaded or published.

use serde::Serialize;

use crate::catalog::listing::ModelRow;
use crate::catalog::speed::Machine;
use crate::discovery::demand::Choice;

/// The mesh `--auto` picked, as the plan shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub name: String,
    pub mesh_id: String,
    pub score: f64,
    /// The scorer's terms (`--explain`'s lines).
    pub reasons: Vec<String>,
}

/// What `--auto` would do about a mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum MeshPlan {
    Join(Target),
    /// No mesh fits a serving node: it would start a public mesh and publish it.
    StartNewMesh {
        reason: String,
    },
    /// No mesh fits a client: it would look again.
    LookAgain {
        reason: String,
    },
}

/// What `--auto` would serve.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ModelPlan {
    Serve {
        model: String,
        reason: String,
        /// Expected decode speed here (catalog models only).
        #[serde(skip_serializing_if = "Option::is_none")]
        tokens_per_sec: Option<f64>,
    },
    Nothing {
        reason: String,
    },
}

/// A catalog model that fits in memory but is passed over as too slow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TooSlow {
    pub model: String,
    pub tokens_per_sec: f64,
}

/// The whole answer of `--dry-run`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRun {
    pub mesh: MeshPlan,
    pub model: ModelPlan,
    pub machine: Machine,
    /// Bytes of memory for a model here.
    pub room_bytes: u64,
    /// `--min-speed`.
    pub min_tokens_per_sec: f64,
    /// Models that fit in memory but are expected below `--min-speed`, fastest first.
    pub too_slow: Vec<TooSlow>,
    /// Models the mesh wants that are too big for this node's memory: once joined,
    /// `--auto` serves the first one split when the members that lend memory hold it fast
    /// enough, which only joining tells (empty when it would serve a model the mesh wants).
    pub split_if_lenders: Vec<String>,
}

/// What the plan is made from.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub client: bool,
    pub best: Option<Target>,
    /// `discovery::demand::choose_model`'s answer (ignored for a client).
    pub choice: Option<Choice>,
    /// The models the mesh wants, in its offer's order.
    pub wanted: Vec<String>,
    /// The catalog rows with their speed on this machine.
    pub rows: &'a [ModelRow],
    pub machine: Machine,
    pub room_bytes: u64,
    pub min_tokens_per_sec: f64,
}

pub fn plan(inputs: Inputs<'_>) -> DryRun {
    let mesh = match (inputs.best, inputs.client) {
        (Some(t), _) => MeshPlan::Join(t),
        (None, true) => MeshPlan::LookAgain {
            reason: "no mesh fits; a client looks again every 10 s".into(),
        },
        (None, false) => MeshPlan::StartNewMesh {
            reason: "no mesh fits; a serving node starts a new public mesh and publishes it".into(),
        },
    };
    let speed_of = |name: &str| {
        inputs
            .rows
            .iter()
            .find(|r| r.entry.name == name)
            .and_then(|r| r.speed)
            .map(|s| s.tokens_per_sec)
    };
    let min = inputs.min_tokens_per_sec;
    let servable = |name: &str| {
        let fits = |r: &&ModelRow| r.fits && r.speed.is_none_or(|s| s.tokens_per_sec >= min);
        inputs
            .rows
            .iter()
            .filter(fits)
            .any(|r| r.entry.name == name)
    };
    let too_big = |name: &str| inputs.rows.iter().any(|r| r.entry.name == name && !r.fits);
    let wants_served = inputs.wanted.iter().any(|w| servable(w));
    let split_if_lenders = match inputs.client || wants_served {
        true => Vec::new(),
        false => inputs
            .wanted
            .iter()
            .filter(|w| too_big(w))
            .cloned()
            .collect(),
    };
    let model = match (inputs.client, inputs.choice) {
        (true, _) => ModelPlan::Nothing {
            reason: "--client: serves nothing".into(),
        },
        (false, Some(c)) => ModelPlan::Serve {
            tokens_per_sec: speed_of(&c.model),
            model: c.model,
            reason: c.reason,
        },
        (false, None) => ModelPlan::Nothing {
            reason: format!(
                "no catalog model fits this machine's memory and decodes at {} tok/s or more \
                 (--min-speed)",
                inputs.min_tokens_per_sec
            ),
        },
    };
    let mut too_slow: Vec<TooSlow> = inputs
        .rows
        .iter()
        .filter(|r| r.fits)
        .filter_map(|r| Some((r, r.speed?.tokens_per_sec)))
        .filter(|(_, tps)| *tps < inputs.min_tokens_per_sec)
        .map(|(r, tokens_per_sec)| TooSlow {
            model: r.entry.name.clone(),
            tokens_per_sec,
        })
        .collect();
    too_slow.sort_by(|a, b| {
        b.tokens_per_sec
            .total_cmp(&a.tokens_per_sec)
            .then(a.model.cmp(&b.model))
    });
    DryRun {
        mesh,
        model,
        machine: inputs.machine,
        room_bytes: inputs.room_bytes,
        min_tokens_per_sec: inputs.min_tokens_per_sec,
        too_slow,
        split_if_lenders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::listing::{rows_on, Sizing};
    use crate::catalog::{Catalog, ResolveOptions};

    const GIB: u64 = 1024 * 1024 * 1024;

    fn machine() -> Machine {
        Machine {
            memory_bandwidth: 22e9,
            gpu_bandwidth: None,
            measured_decode: None,
        }
    }

    fn rows(room: u64) -> Vec<ModelRow> {
        let dir = tempfile::tempdir().unwrap();
        let opts = ResolveOptions {
            cache_dir: dir.path().to_path_buf(),
            ..ResolveOptions::from_env()
        };
        rows_on(
            &Catalog::embedded().unwrap().models,
            &opts,
            room,
            Some(&machine()),
            Sizing::default(),
        )
    }

    fn inputs(client: bool, rows: &[ModelRow]) -> Inputs<'_> {
        Inputs {
            client,
            best: None,
            choice: None,
            wanted: Vec::new(),
            rows,
            machine: machine(),
            room_bytes: 24 * GIB,
            min_tokens_per_sec: 10.0,
        }
    }

    #[test]
    fn a_serving_node_with_no_mesh_starts_one_and_lists_the_32b_model_as_too_slow() {
        let rows = rows(24 * GIB);
        let choice = Choice {
            model: "SmolLM2-135M-Instruct-Q4_1".into(),
            reason: "the largest catalog model that fits here".into(),
            split: None,
        };
        let p = plan(Inputs {
            choice: Some(choice),
            ..inputs(false, &rows)
        });
        assert!(matches!(p.mesh, MeshPlan::StartNewMesh { .. }));
        let ModelPlan::Serve {
            model,
            tokens_per_sec,
            ..
        } = &p.model
        else {
            panic!("{:?}", p.model)
        };
        assert_eq!(model, "SmolLM2-135M-Instruct-Q4_1");
        assert!(tokens_per_sec.unwrap() > 10.0);
        let slow: Vec<_> = p.too_slow.iter().map(|t| t.model.as_str()).collect();
        assert!(slow.contains(&"Qwen2.5-32B-Instruct-Q4_K_M"), "{slow:?}");
        assert!(!slow.contains(&"SmolLM2-135M-Instruct-Q4_1"));
        assert!(p
            .too_slow
            .windows(2)
            .all(|w| w[0].tokens_per_sec >= w[1].tokens_per_sec));
    }

    #[test]
    fn a_client_joins_or_looks_again_and_serves_nothing() {
        let rows = rows(24 * GIB);
        let p = plan(inputs(true, &rows));
        assert!(matches!(p.mesh, MeshPlan::LookAgain { .. }));
        assert!(matches!(p.model, ModelPlan::Nothing { .. }));
        let target = Target {
            name: "m".into(),
            mesh_id: "id".into(),
            score: 42.0,
            reasons: vec!["+40 model".into()],
        };
        let p = plan(Inputs {
            best: Some(target.clone()),
            ..inputs(true, &rows)
        });
        assert_eq!(p.mesh, MeshPlan::Join(target));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["mesh"]["action"], "join");
        assert_eq!(json["model"]["action"], "nothing");
    }

    #[test]
    fn no_model_fast_enough_says_why() {
        let rows = rows(24 * GIB);
        let p = plan(inputs(false, &rows));
        let ModelPlan::Nothing { reason } = p.model else {
            panic!()
        };
        assert!(reason.contains("--min-speed"), "{reason}");
    }

    #[test]
    fn wanted_models_too_big_for_memory_here_are_listed_as_split_if_members_lend_memory() {
        let rows = rows(24 * GIB);
        let wanted = |w: &[&str]| w.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let big = "MiniMax-M2.5-Q4_K_M";
        // Fits 24 GiB but decodes too slowly: loaded whole if at all, never split.
        let slow = "Qwen2.5-32B-Instruct-Q4_K_M";
        let small = "SmolLM2-135M-Instruct-Q4_1";
        let p = plan(Inputs {
            wanted: wanted(&[slow, big, "not-in-the-catalog"]),
            ..inputs(false, &rows)
        });
        assert_eq!(p.split_if_lenders, [big]);
        // A wanted model it can serve comes first: no split then; nor for a client.
        let p = plan(Inputs {
            wanted: wanted(&[big, small]),
            ..inputs(false, &rows)
        });
        assert!(p.split_if_lenders.is_empty());
        let p = plan(Inputs {
            wanted: wanted(&[big]),
            ..inputs(true, &rows)
        });
        assert!(p.split_if_lenders.is_empty());
    }
}
