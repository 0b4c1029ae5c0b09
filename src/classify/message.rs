//! Recognises the API's error messages: which documented wording a message is, which request
//! parameter it names, and the queue limit of a `queue_full` message. Pure text matching.

use std::sync::LazyLock;

use regex::Regex;

use super::labels::{Field, Reason};

/// What one message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recognised {
    /// Which documented wording it is (`other` if none).
    pub reason: Reason,
    /// The request parameter it names, for validation reasons.
    pub field: Option<Field>,
    /// N of `Maximum N queued requests`.
    pub queue_limit: Option<u32>,
}

struct Rule {
    reason: Reason,
    pattern: Regex,
    /// A field named by the wording itself rather than by a capture (`Model not found` → model_id).
    implied_field: Option<Field>,
}

/// A parameter name as the API writes it: `prompt`, `guidance_scale`, `The init image field`.
const PARAM: &str = r"(?:the\s+)?(?P<field>[a-z_][a-z0-9_ ]{0,40}?)(?:\s+field)?";

fn rule(reason: Reason, pattern: &str, implied_field: Option<Field>) -> Rule {
    // The patterns are literals of this file, covered by the table tests below; a typo is caught
    // by every test run, never by a user.
    #[allow(clippy::expect_used)]
    let pattern = Regex::new(&format!("(?i){pattern}")).expect("classifier patterns are valid");
    Rule { reason, pattern, implied_field }
}

/// Ordered: the first match wins. Account and server wordings come before the generic
/// parameter wordings so that `Invalid API key` is not read as a parameter error.
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(Reason::QueueFull, r"rate limit exceeded|queued requests", None),
        rule(
            Reason::InvalidApiKey,
            r"invalid api[ _-]?key|api[ _-]?key (?:is |has been |was )?(?:invalid|revoked|expired|not valid)|(?:revoked|expired) (?:api[ _-]?)?key",
            Some(Field::Key),
        ),
        rule(Reason::InsufficientCredits, r"insufficient (?:credits?|balance|funds)", None),
        rule(
            Reason::PlanRequired,
            r"requires an? (?:premium|paid|higher|pro|enterprise)?\s*(?:subscription|plan)|upgrade your (?:plan|subscription)",
            None,
        ),
        rule(Reason::InternalError, r"internal server error", None),
        rule(Reason::TemporarilyUnavailable, r"temporarily unavailable|service unavailable", None),
        rule(Reason::MalformedJson, r"malformed json|invalid json", None),
        rule(
            Reason::ModelNotFound,
            r"model not found|model .{0,80} (?:not found|does not exist)",
            Some(Field::ModelId),
        ),
        rule(Reason::ImageFetchFailed, r"unable to (?:fetch|download|load) (?:the )?image", Some(Field::InitImage)),
        rule(Reason::MissingParameter, &format!(r"^\s*{PARAM}\s+is\s+required"), None),
        rule(Reason::MissingParameter, r"missing (?:required )?(?:parameter|field)s?:?\s+`?(?P<field>[a-z_]+)", None),
        rule(
            Reason::InvalidType,
            &format!(
                r"^\s*{PARAM}\s+must\s+be\s+an?\s+(?:string|number|integer|int|float|numeric|boolean|bool|array|object|valid url|url|image)\b"
            ),
            None,
        ),
        rule(Reason::OutOfRange, &format!(r"^\s*{PARAM}\s+must\s+be\s+between\b"), None),
        rule(
            Reason::OutOfRange,
            &format!(
                r"^\s*{PARAM}\s+(?:must|may)\s+(?:be\s+)?(?:not\s+be\s+)?(?:at\s+least|at\s+most|greater|less|less\s+than|no\s+more\s+than)\b"
            ),
            None,
        ),
        rule(Reason::NotDivisible, &format!(r"^\s*{PARAM}\s+must\s+be\s+(?:divisible\s+by|a\s+multiple\s+of)\b"), None),
    ]
});

static QUEUE_LIMIT: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // a literal pattern, exercised by the tests below
    Regex::new(r"(?i)maximum\s+(\d{1,6})\s+queued").expect("queue limit pattern is valid")
});

/// Recognises one message. Anything not in the table is `other`.
pub fn recognise(message: &str) -> Recognised {
    for rule in RULES.iter() {
        let Some(caps) = rule.pattern.captures(message) else { continue };
        let field = caps.name("field").map(|m| Field::from_param(m.as_str())).or(rule.implied_field);
        let field = if rule.reason.is_validation() { Some(field.unwrap_or(Field::Other)) } else { field };
        let queue_limit = if rule.reason == Reason::QueueFull {
            QUEUE_LIMIT.captures(message).and_then(|c| c[1].parse().ok())
        } else {
            None
        };
        return Recognised { reason: rule.reason, field, queue_limit };
    }
    Recognised { reason: Reason::Other, field: None, queue_limit: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_document_and_api_facts_wordings() {
        use Field as F;
        use Reason as R;
        let table: &[(&str, Reason, Option<Field>)] = &[
            // HTTP status section of the seed
            ("prompt is required", R::MissingParameter, Some(F::Prompt)),
            ("Invalid API key", R::InvalidApiKey, Some(F::Key)),
            ("Insufficient credits. Please add more credits to continue.", R::InsufficientCredits, None),
            ("This feature requires a premium subscription", R::PlanRequired, None),
            ("Rate limit exceeded. Maximum 5 queued requests allowed.", R::QueueFull, None),
            ("Internal server error. Please try again.", R::InternalError, None),
            ("Service temporarily unavailable. Please try again later.", R::TemporarilyUnavailable, None),
            // common scenarios
            ("Model not found: invalid_model_name", R::ModelNotFound, Some(F::ModelId)),
            ("Unable to fetch image from provided URL", R::ImageFetchFailed, Some(F::InitImage)),
            ("Malformed JSON in request body", R::MalformedJson, None),
            // validation table
            ("prompt must be a string", R::InvalidType, Some(F::Prompt)),
            ("width must be between 256 and 1024", R::OutOfRange, Some(F::Width)),
            ("height must be divisible by 8", R::NotDivisible, Some(F::Height)),
            ("samples must be between 1 and 4", R::OutOfRange, Some(F::Samples)),
            ("guidance_scale must be between 1 and 20", R::OutOfRange, Some(F::GuidanceScale)),
            // 401 causes and Laravel wordings from API-FACTS
            ("key is required", R::MissingParameter, Some(F::Key)),
            ("Your API key has been revoked", R::InvalidApiKey, Some(F::Key)),
            ("API key expired", R::InvalidApiKey, Some(F::Key)),
            ("Expired key", R::InvalidApiKey, Some(F::Key)),
            ("The prompt field is required.", R::MissingParameter, Some(F::Prompt)),
            ("The init image field is required.", R::MissingParameter, Some(F::InitImage)),
            ("The width must be a number.", R::InvalidType, Some(F::Width)),
            ("The samples field must be between 1 and 4.", R::OutOfRange, Some(F::Samples)),
            ("colour must be a string", R::InvalidType, Some(F::Other)),
            // not errors the table knows
            ("Something went wrong", R::Other, None),
            ("", R::Other, None),
            ("Try to fetch request after seconds estimated", R::Other, None),
        ];
        for (message, reason, field) in table {
            let got = recognise(message);
            assert_eq!((got.reason, got.field), (*reason, *field), "message {message:?}");
        }
    }

    #[test]
    fn queue_limit_is_read_from_the_message() {
        for (message, n) in [
            ("Rate limit exceeded. Maximum 5 queued requests allowed.", Some(5)),
            ("Rate limit exceeded. Maximum 15 queued requests allowed.", Some(15)),
            ("rate limit exceeded", None),
            ("Rate limit exceeded. Maximum 99999999999 queued requests allowed.", None),
        ] {
            assert_eq!(recognise(message).queue_limit, n, "{message}");
        }
    }
}
