//! The closed vocabularies of the error model. Every value here may become a Prometheus label
//! value, so each enum is closed, has a stable `as_str()`, and parses back from that string
//! (config files name them in `expect.error_class` / `expect.reason`).

use std::fmt;

/// Declares a closed label enum with `as_str`, `ALL`, `Display` and `FromStr`.
macro_rules! label_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name { $($(#[$vmeta])* #[doc = concat!("Label value `", $text, "`.")] $variant,)+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// The value whose label is `s`, ASCII case ignored.
            pub fn parse_ignore_case(s: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(s))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::classify::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::classify::UnknownName::new(s, $name::ALL.iter().map(|v| v.as_str())))
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let names: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                schemars::json_schema!({ "type": "string", "enum": names })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}
pub(crate) use label_enum;

/// A name that is not one of a closed set; says which names are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    given: String,
    allowed: String,
}

impl UnknownName {
    pub(crate) fn new<'a>(given: &str, allowed: impl Iterator<Item = &'a str>) -> Self {
        let allowed: Vec<&str> = allowed.collect();
        UnknownName { given: given.to_owned(), allowed: allowed.join(", ") }
    }
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown value `{}`, expected one of: {}", self.given, self.allowed)
    }
}

impl std::error::Error for UnknownName {}

label_enum! {
    /// What an answer means for the caller: done, still running, or failed.
    pub enum Outcome {
        Success => "success",
        Processing => "processing",
        Error => "error",
    }
}

label_enum! {
    /// Why an exchange failed, coarse enough to alert on (`error_class` label).
    pub enum ErrorClass {
        BadRequest => "bad_request",
        Unauthorized => "unauthorized",
        PaymentRequired => "payment_required",
        Forbidden => "forbidden",
        NotFound => "not_found",
        RateLimited => "rate_limited",
        ClientError => "client_error",
        ServerError => "server_error",
        Unavailable => "unavailable",
        Timeout => "timeout",
        Transport => "transport",
        InvalidResponse => "invalid_response",
        JobFailed => "job_failed",
        Unknown => "unknown",
    }
}

label_enum! {
    /// What the message said, recognised from the API's documented wordings (`reason` label).
    pub enum Reason {
        MissingParameter => "missing_parameter",
        InvalidType => "invalid_type",
        OutOfRange => "out_of_range",
        NotDivisible => "not_divisible",
        ModelNotFound => "model_not_found",
        ImageFetchFailed => "image_fetch_failed",
        MalformedJson => "malformed_json",
        InvalidApiKey => "invalid_api_key",
        InsufficientCredits => "insufficient_credits",
        PlanRequired => "plan_required",
        QueueFull => "queue_full",
        InternalError => "internal_error",
        TemporarilyUnavailable => "temporarily_unavailable",
        NonJsonBody => "non_json_body",
        /// A streamed answer that ended, cleanly or not, before its terminator.
        StreamInterrupted => "stream_interrupted",
        Other => "other",
    }
}

label_enum! {
    /// Request parameters the API validates (`field` label); anything else is `other`.
    pub enum Field {
        Prompt => "prompt",
        NegativePrompt => "negative_prompt",
        Width => "width",
        Height => "height",
        Samples => "samples",
        GuidanceScale => "guidance_scale",
        NumInferenceSteps => "num_inference_steps",
        ModelId => "model_id",
        InitImage => "init_image",
        MaskImage => "mask_image",
        Key => "key",
        Seed => "seed",
        Strength => "strength",
        Scheduler => "scheduler",
        Webhook => "webhook",
        TrackId => "track_id",
        RequestId => "request_id",
        /// The LLM API's chat messages.
        Messages => "messages",
        MaxTokens => "max_tokens",
        Temperature => "temperature",
        Other => "other",
    }
}

label_enum! {
    /// The `status` field of a JSON answer, when it is one the API uses.
    pub enum ApiStatus {
        Success => "success",
        Processing => "processing",
        Error => "error",
        Failed => "failed",
    }
}

label_enum! {
    /// Why an LLM answer stopped (`finish_reason` label): OpenAI's and Anthropic's words.
    pub enum FinishReason {
        /// OpenAI: the model ended its answer.
        Stop => "stop",
        /// OpenAI: cut at `max_tokens` (a truncated answer).
        Length => "length",
        /// OpenAI: withheld by the content filter.
        ContentFilter => "content_filter",
        /// OpenAI: the model called tools.
        ToolCalls => "tool_calls",
        /// Anthropic: the model ended its turn.
        EndTurn => "end_turn",
        /// Anthropic: cut at `max_tokens` (a truncated answer).
        MaxTokens => "max_tokens",
        /// Anthropic: a stop sequence was met.
        StopSequence => "stop_sequence",
        /// Anthropic: the model called tools.
        ToolUse => "tool_use",
        /// Any other word.
        Other => "other",
    }
}

impl FinishReason {
    /// The label of a provider's word (`other` for one it does not know).
    pub fn of(word: &str) -> FinishReason {
        word.parse().unwrap_or(FinishReason::Other)
    }

    /// Whether the answer was cut at its token limit.
    pub fn truncated(self) -> bool {
        matches!(self, FinishReason::Length | FinishReason::MaxTokens)
    }
}

label_enum! {
    /// A vendor status page's state, worst last (`status` label of the component stateset).
    pub enum PageStatus {
        Operational => "operational",
        Maintenance => "maintenance",
        Degraded => "degraded",
        PartialOutage => "partial_outage",
        MajorOutage => "major_outage",
    }
}

impl PageStatus {
    /// The value of `modelslab_status_page_status`: 0 operational … 4 major outage.
    pub fn level(self) -> u8 {
        match self {
            PageStatus::Operational => 0,
            PageStatus::Maintenance => 1,
            PageStatus::Degraded => 2,
            PageStatus::PartialOutage => 3,
            PageStatus::MajorOutage => 4,
        }
    }
}

impl ErrorClass {
    /// The class an HTTP status implies when the status is not 2xx.
    pub fn from_http_status(status: u16) -> ErrorClass {
        match status {
            400 => ErrorClass::BadRequest,
            401 => ErrorClass::Unauthorized,
            402 => ErrorClass::PaymentRequired,
            403 => ErrorClass::Forbidden,
            404 => ErrorClass::NotFound,
            429 => ErrorClass::RateLimited,
            503 => ErrorClass::Unavailable,
            405..=499 => ErrorClass::ClientError,
            500..=599 => ErrorClass::ServerError,
            // 1xx and 3xx are not answers the API gives to its clients.
            _ => ErrorClass::InvalidResponse,
        }
    }
}

impl Reason {
    /// The class a reason implies when the HTTP status is 2xx (the API's HTTP-200 errors).
    pub fn class_when_2xx(self) -> ErrorClass {
        match self {
            Reason::MissingParameter
            | Reason::InvalidType
            | Reason::OutOfRange
            | Reason::NotDivisible
            | Reason::ModelNotFound
            | Reason::ImageFetchFailed
            | Reason::MalformedJson => ErrorClass::BadRequest,
            Reason::InvalidApiKey => ErrorClass::Unauthorized,
            Reason::InsufficientCredits => ErrorClass::PaymentRequired,
            Reason::PlanRequired => ErrorClass::Forbidden,
            Reason::QueueFull => ErrorClass::RateLimited,
            Reason::InternalError => ErrorClass::ServerError,
            Reason::TemporarilyUnavailable => ErrorClass::Unavailable,
            Reason::NonJsonBody => ErrorClass::InvalidResponse,
            Reason::StreamInterrupted => ErrorClass::Transport,
            Reason::Other => ErrorClass::Unknown,
        }
    }

    /// Reasons that are about one request parameter, counted per field.
    pub fn is_validation(self) -> bool {
        matches!(
            self,
            Reason::MissingParameter
                | Reason::InvalidType
                | Reason::OutOfRange
                | Reason::NotDivisible
                | Reason::ModelNotFound
                | Reason::ImageFetchFailed
        )
    }
}

impl Field {
    /// Maps a parameter name as the API words it (`init image`, `The prompt`, `guidance_scale`)
    /// onto the allowlist.
    pub fn from_param(name: &str) -> Field {
        let name = name.trim().trim_matches(|c| c == '`' || c == '"' || c == '\'');
        let lower = name.to_ascii_lowercase();
        let lower = lower.strip_prefix("the ").unwrap_or(&lower);
        let normalised: String = lower.trim().chars().map(|c| if c == ' ' || c == '-' { '_' } else { c }).collect();
        let normalised = normalised.strip_suffix("_field").unwrap_or(&normalised);
        match normalised {
            "steps" => Field::NumInferenceSteps,
            "model" => Field::ModelId,
            "max_completion_tokens" => Field::MaxTokens,
            "api_key" => Field::Key,
            other => other.parse().unwrap_or(Field::Other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for c in ErrorClass::ALL {
            assert_eq!(c.as_str().parse::<ErrorClass>(), Ok(*c));
        }
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(*r));
        }
        let err = "bad_requests".parse::<ErrorClass>().unwrap_err().to_string();
        assert!(err.starts_with("unknown value `bad_requests`, expected one of: bad_request, "), "{err}");
    }

    #[test]
    fn http_status_classes() {
        let table = [
            (400, "bad_request"),
            (401, "unauthorized"),
            (402, "payment_required"),
            (403, "forbidden"),
            (404, "not_found"),
            (405, "client_error"),
            (422, "client_error"),
            (429, "rate_limited"),
            (500, "server_error"),
            (502, "server_error"),
            (503, "unavailable"),
            (504, "server_error"),
            (302, "invalid_response"),
        ];
        for (status, class) in table {
            assert_eq!(ErrorClass::from_http_status(status).as_str(), class, "{status}");
        }
    }

    #[test]
    fn parameter_names_as_the_api_words_them() {
        assert_eq!(Field::from_param("prompt"), Field::Prompt);
        assert_eq!(Field::from_param("The prompt"), Field::Prompt);
        assert_eq!(Field::from_param("init image"), Field::InitImage);
        assert_eq!(Field::from_param("guidance_scale"), Field::GuidanceScale);
        assert_eq!(Field::from_param("Width"), Field::Width);
        assert_eq!(Field::from_param("colour"), Field::Other);
        assert_eq!(Field::from_param(""), Field::Other);
    }
}
