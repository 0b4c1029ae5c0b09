//! The agent judges its own events against the configured SLOs: each observed exchange, ended job
//! and finished probe run counts as good or bad for every SLO whose SLI it falls under, in
//! `modelslab_slo_events_total{slo,result}`. The static rule file does the rest (burn rates,
//! budgets, alerts) for any set of SLOs.

use std::collections::HashSet;

use crate::classify::ErrorClass;
use crate::config::{Sli, SliSource, Slo};
use crate::vocab::{Exchange, JobEnd, JobResult, Source};

/// The burn rate of the fast page of the SLO rules (1h and 5m windows, Google SRE workbook): at
/// it a 30-day budget is gone in about 2 days. The status page's verdict flags an SLO burning this
/// fast too; the rule file is rendered from the same figure (`alerts`).
pub const PAGE_BURN_RATE_FAST: f64 = 14.4;

/// The SLOs of the running configuration, ready to judge events.
#[derive(Debug, Default)]
pub struct SloSet {
    slos: Vec<Judge>,
}

#[derive(Debug)]
struct Judge {
    name: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Requests { source: SliSource, endpoints: HashSet<String>, bad: HashSet<ErrorClass> },
    Jobs { source: SliSource, max_seconds: Option<f64> },
    Probes(HashSet<String>),
}

fn matches(want: SliSource, source: Source) -> bool {
    match want {
        SliSource::Any => true,
        SliSource::Proxy => source == Source::Proxy,
        SliSource::Probe => source == Source::Probe,
    }
}

impl SloSet {
    /// Judges against `slos` (the configuration's).
    pub fn new(slos: &[Slo]) -> Self {
        let slos = slos
            .iter()
            .map(|s| Judge {
                name: s.name.clone(),
                kind: match &s.sli {
                    Sli::Requests(r) => Kind::Requests {
                        source: r.source,
                        endpoints: r.endpoints.iter().cloned().collect(),
                        bad: r.bad_classes.iter().copied().collect(),
                    },
                    Sli::Jobs(j) => {
                        Kind::Jobs { source: j.source, max_seconds: j.max_duration.map(|d| d.as_secs_f64()) }
                    }
                    Sli::Probes(names) => Kind::Probes(names.iter().cloned().collect()),
                },
            })
            .collect();
        SloSet { slos }
    }

    /// Whether there is no SLO.
    pub fn is_empty(&self) -> bool {
        self.slos.is_empty()
    }

    /// The names of the SLOs.
    pub fn names(&self) -> Vec<String> {
        self.slos.iter().map(|s| s.name.clone()).collect()
    }

    /// `(slo, good)` for every requests SLO the exchange falls under: bad when its error class is
    /// one the SLO holds against the API.
    pub fn exchange<'a>(&'a self, ex: &'a Exchange<'_>) -> impl Iterator<Item = (&'a str, bool)> + 'a {
        self.slos.iter().filter_map(move |s| match &s.kind {
            Kind::Requests { source, endpoints, bad } => {
                let counted = matches(*source, ex.source) && (endpoints.is_empty() || endpoints.contains(ex.endpoint));
                let good = ex.classification.error_class().is_none_or(|c| !bad.contains(&c));
                counted.then_some((s.name.as_str(), good))
            }
            _ => None,
        })
    }

    /// `(slo, good)` for every jobs SLO: good when it succeeded within the SLO's duration.
    /// Evicted jobs are not judged: nobody knows how they ended.
    pub fn job<'a>(&'a self, job: &'a JobEnd<'_>) -> impl Iterator<Item = (&'a str, bool)> + 'a {
        self.slos.iter().filter_map(move |s| match &s.kind {
            Kind::Jobs { source, max_seconds } if matches(*source, job.source) && job.result != JobResult::Evicted => {
                let in_time = max_seconds.is_none_or(|m| job.duration.as_secs_f64() <= m);
                Some((s.name.as_str(), job.result == JobResult::Success && in_time))
            }
            _ => None,
        })
    }

    /// `(slo, good)` for every probes SLO that lists `probe`.
    pub fn probe<'a>(&'a self, probe: &'a str, success: bool) -> impl Iterator<Item = (&'a str, bool)> + 'a {
        self.slos.iter().filter_map(move |s| match &s.kind {
            Kind::Probes(names) if names.contains(probe) => Some((s.name.as_str(), success)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::classify::Classification;
    use crate::config::{JobsSli, RequestsSli};

    fn slo(name: &str, sli: Sli) -> Slo {
        Slo { name: name.into(), objective: 99.0, window: Duration::from_secs(30 * 86_400), min_events: 10, sli }
    }

    #[test]
    fn each_kind_of_event_is_judged_by_its_own_slos() {
        let set = SloSet::new(&[
            slo(
                "proxy-gen",
                Sli::Requests(RequestsSli {
                    source: SliSource::Proxy,
                    endpoints: vec!["/api/v6/images/text2img".into()],
                    bad_classes: RequestsSli::default_bad_classes(),
                }),
            ),
            slo("jobs", Sli::Jobs(JobsSli { source: SliSource::Any, max_duration: Some(Duration::from_secs(60)) })),
            slo("gen-probe", Sli::Probes(vec!["gen".into()])),
        ]);
        let ex = |source, endpoint, c: &'static Classification| Exchange {
            source,
            endpoint,
            model: "flux",
            http_status: Some(200),
            classification: c,
            duration: Duration::ZERO,
            time_to_first_token: None,
        };
        static SERVER: std::sync::LazyLock<Classification> = std::sync::LazyLock::new(|| {
            Classification::error_of(ErrorClass::ServerError, crate::classify::Reason::InternalError)
        });
        static CALLER: std::sync::LazyLock<Classification> = std::sync::LazyLock::new(|| {
            Classification::error_of(ErrorClass::BadRequest, crate::classify::Reason::MissingParameter)
        });
        let generate = "/api/v6/images/text2img";
        let judged = |e: Exchange<'_>| set.exchange(&e).map(|(n, g)| (n.to_owned(), g)).collect::<Vec<_>>();
        assert_eq!(judged(ex(Source::Proxy, generate, &SERVER)), [("proxy-gen".to_owned(), false)]);
        assert_eq!(
            judged(ex(Source::Proxy, generate, &CALLER)),
            [("proxy-gen".to_owned(), true)],
            "the caller's fault"
        );
        assert!(judged(ex(Source::Probe, generate, &SERVER)).is_empty(), "another source");
        assert!(judged(ex(Source::Proxy, "/api/v6/images/fetch/{id}", &SERVER)).is_empty(), "another endpoint");

        let job = |result, secs| JobEnd {
            source: Source::Probe,
            endpoint: generate,
            model: "flux",
            result,
            duration: Duration::from_secs(secs),
            first_eta: None,
        };
        let judged = |j: JobEnd<'_>| set.job(&j).map(|(_, g)| g).collect::<Vec<_>>();
        assert_eq!(judged(job(JobResult::Success, 30)), [true]);
        assert_eq!(judged(job(JobResult::Success, 90)), [false], "too slow");
        assert_eq!(judged(job(JobResult::Expired, 1800)), [false]);
        assert!(judged(job(JobResult::Evicted, 10)).is_empty());

        assert_eq!(set.probe("gen", false).collect::<Vec<_>>(), [("gen-probe", false)]);
        assert_eq!(set.probe("other", false).count(), 0);
    }
}
