//! The model catalogue (`account.models`): the models of `labels.models` the catalogue lists.
//! `modelslab_model_listed{model}` is 1 while a model is listed and 0 once it is gone; a model
//! never seen listed (a media model when the catalogue is the LLM API's) has no series, so it
//! alerts nobody. Answers are read by shape: `data[].id` (the LLM API's), `models[].model_id`,
//! or a bare array of such objects or of strings; they are a success without a `status`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

use super::{Answer, Ask, PollError, ask, failed};
use crate::BoxFuture;
use crate::config::Config;
use crate::observe::status::ModelsView;
use crate::observe::{self, AccountPoll, Observer};
use crate::poller::{Polled, Schedule};

/// A poll that has not answered by then failed.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Model ids read from one answer, at most.
const MAX_MODELS: usize = 10_000;

/// The catalogue poller.
#[derive(Clone)]
pub struct Catalogue {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct State {
    view: ModelsView,
    /// Models of `labels.models` seen listed at least once (they have a series).
    seen: BTreeSet<String>,
}

struct Inner {
    observer: Observer,
    client: reqwest::Client,
    state: Mutex<State>,
}

impl Catalogue {
    /// `client` is the API's (`clients::Clients::api`).
    pub fn new(observer: Observer, client: reqwest::Client) -> Self {
        Catalogue { inner: Arc::new(Inner { observer, client, state: Mutex::default() }) }
    }

    /// One poll, published: the catalogue's model ids.
    pub async fn poll_once(&self, config: &Config) -> Result<BTreeSet<String>, PollError> {
        let m = &config.account.models;
        let found = ask(&self.inner.client, config, &m.path, Ask::GetWithHeader, TIMEOUT)
            .await
            .and_then(|(answer, key)| read(&answer, &key));
        self.publish(&found, &config.labels.models);
        found
    }

    fn publish(&self, found: &Result<BTreeSet<String>, PollError>, watched: &[String]) {
        let mut st = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        let catalogue = match found {
            Ok(c) => c,
            Err(why) => {
                let text = failed(&self.inner.observer, AccountPoll::Models, why, st.view.up != Some(false));
                st.view.up = Some(false);
                st.view.last_error = Some(text);
                return;
            }
        };
        // Models no longer watched lose their series; the watched ones listed get one.
        let forgotten: Vec<String> = st.seen.iter().filter(|m| !watched.contains(m)).cloned().collect();
        for m in &forgotten {
            st.seen.remove(m);
        }
        for m in watched.iter().filter(|m| catalogue.contains(*m)) {
            st.seen.insert(m.clone());
        }
        let listed: Vec<(&str, bool)> = st.seen.iter().map(|m| (m.as_str(), catalogue.contains(m))).collect();
        let delisted: Vec<String> = listed.iter().filter(|(_, on)| !on).map(|(m, _)| (*m).to_owned()).collect();
        let newly_gone: Vec<&str> =
            delisted.iter().filter(|m| !st.view.delisted.contains(m)).map(String::as_str).collect();
        self.inner.observer.emit(observe::CataloguePolled {
            listed: &listed,
            forgotten: &forgotten,
            newly_delisted: &newly_gone,
            size: catalogue.len(),
            recovered: st.view.up == Some(false),
        });
        st.view = ModelsView {
            listed: listed.iter().filter(|(_, on)| *on).map(|(m, _)| (*m).to_owned()).collect(),
            delisted,
            catalogue_size: Some(catalogue.len()),
            up: Some(true),
            last_error: None,
        };
    }

    pub(super) fn view(&self) -> ModelsView {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner).view.clone()
    }
}

impl Polled for Catalogue {
    fn schedule(&self, config: &Config) -> Option<Schedule> {
        let m = &config.account.models;
        m.enabled.then_some(Schedule { interval: m.interval, timeout: TIMEOUT.min(m.interval), leader_only: true })
    }

    fn poll<'a>(&'a self, config: &'a Config) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.poll_once(config).await;
        })
    }

    fn timed_out(&self, timeout: Duration) {
        self.publish(&Err(PollError::Timeout(timeout)), &[]);
    }
}

/// Reads a catalogue answer: a list in one of its shapes is a success whatever else it says; any
/// other answer goes through the error model (a 401, a 200 with `"status":"error"`).
fn read(answer: &Answer, key: &str) -> Result<BTreeSet<String>, PollError> {
    if (200..300).contains(&answer.status) {
        if let Some(models) = listed(&answer.json()) {
            return Ok(models);
        }
    }
    answer.judged(key)?;
    Err(PollError::Missing("model list (data[].id, models[].model_id or an array)"))
}

/// The model ids of a catalogue in any of the API's shapes; `None` when `json` is none of them.
fn listed(json: &Value) -> Option<BTreeSet<String>> {
    let items = match json {
        Value::Array(items) => items,
        Value::Object(map) => match (map.get("data"), map.get("models")) {
            (Some(Value::Array(items)), _) | (_, Some(Value::Array(items))) => items,
            _ => return None,
        },
        _ => return None,
    };
    let id = |item: &Value| -> Option<String> {
        let v = match item {
            Value::String(_) => item,
            Value::Object(o) => o.get("id").or_else(|| o.get("model_id"))?,
            _ => return None,
        };
        v.as_str().map(str::trim).filter(|s| !s.is_empty() && s.len() <= 256).map(str::to_owned)
    };
    Some(items.iter().take(MAX_MODELS).filter_map(id).collect())
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use serde_json::json;

    use super::*;
    use crate::scrape::Scrape;

    #[test]
    fn every_shape_of_the_catalogue() {
        let set = |ids: &[&str]| Some(ids.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>());
        let table = [
            (json!({"object":"list","data":[{"id":"a","object":"model"},{"id":"b"}]}), set(&["a", "b"])),
            (
                json!({"status":"success","models":[{"model_id":"flux"},{"model_id":"sdxl","name":"SDXL"}]}),
                set(&["flux", "sdxl"]),
            ),
            (json!([{"model_id":"flux"},{"id":"b"}, 3, {"x":1}]), set(&["flux", "b"])),
            (json!(["flux", " sdxl ", ""]), set(&["flux", "sdxl"])),
            (json!({"data":[]}), set(&[])),
            (json!({"status":"success","message":"ok"}), None),
            (json!("flux"), None),
        ];
        for (answer, want) in table {
            assert_eq!(listed(&answer), want, "{answer}");
        }
        let answer =
            |status: u16, body: &str| Answer { status, headers: HeaderMap::new(), body: body.as_bytes().to_vec() };
        let why = read(
            &answer(401, r#"{"error":{"message":"Invalid API key sk-models-key","type":"authentication_error"}}"#),
            "sk-models-key",
        )
        .unwrap_err()
        .to_string();
        assert!(why.starts_with("HTTP 401, unauthorized/") && !why.contains("sk-models-key"), "{why}");
        let why = read(&answer(200, r#"{"status":"error","message":"Invalid API key"}"#), "k").unwrap_err().to_string();
        assert!(why.starts_with("HTTP 200, unauthorized/"), "{why}");
    }

    #[test]
    fn a_model_goes_to_zero_when_it_leaves_and_a_failed_poll_keeps_it() {
        let m = Arc::new(crate::metrics::Metrics::new(&crate::config::Labels::default()).unwrap());
        let c = Catalogue::new(Observer::new(m.clone()), reqwest::Client::new());
        let watched: Vec<String> = ["a", "b", "never-listed"].map(String::from).to_vec();
        let listed = |s: &Scrape, model: &str| s.metric("modelslab_model_listed").label("model", model).value();
        let catalogue = |ids: &[&str]| Ok(ids.iter().map(|s| (*s).to_owned()).collect());

        c.publish(&catalogue(&["a", "b", "c"]), &watched);
        let s = Scrape::parse(&m.render().unwrap());
        assert_eq!((listed(&s, "a"), listed(&s, "b"), listed(&s, "never-listed")), (Some(1.0), Some(1.0), None));
        assert_eq!(s.metric("modelslab_account_models_up").value(), Some(1.0));

        c.publish(&catalogue(&["a", "c"]), &watched);
        c.publish(&Err(PollError::Unreachable), &watched);
        let s = Scrape::parse(&m.render().unwrap());
        assert_eq!((listed(&s, "a"), listed(&s, "b")), (Some(1.0), Some(0.0)), "b left; a failed poll keeps it");
        assert_eq!(s.metric("modelslab_account_models_up").value(), Some(0.0));
        assert_eq!(c.view().delisted, vec!["b".to_owned()]);

        // Back in the catalogue: 1 again; no longer watched: no series.
        c.publish(&catalogue(&["a", "b"]), &watched[1..]);
        let s = Scrape::parse(&m.render().unwrap());
        assert_eq!((listed(&s, "a"), listed(&s, "b")), (None, Some(1.0)));
    }
}
