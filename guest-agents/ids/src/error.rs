//! Typed errors of the rule loader.

/// Why one rule was not loaded.
///
/// [`RuleError::Unsupported`] means the rule is valid Snort syntax but uses something this
/// engine cannot evaluate faithfully; every other variant means the rule text is malformed (or
/// refers to something undefined). Either way the whole rule is skipped: a rule is never loaded
/// with some of its conditions dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The rule uses options (or option arguments) this engine does not evaluate. Every such
    /// option of the rule is listed, by name (a pcre flag appears as `pcre:U`, an unsupported
    /// flow keyword as `flow:only_stream`, and so on).
    #[error("unsupported: {}", .0.join(", "))]
    Unsupported(Vec<String>),
    /// The first word is not a rule action.
    #[error("unknown rule action `{0}`")]
    UnknownAction(String),
    /// The protocol is not one of `ip`, `tcp`, `udp`, `icmp` (Snort 3 service rules such as
    /// `alert http (...)` land here too).
    #[error("unsupported protocol `{0}` (only ip, tcp, udp, icmp)")]
    UnsupportedProtocol(String),
    /// The header does not have the seven fields `action proto src sport dir dst dport`.
    #[error("malformed rule header: {0}")]
    Header(String),
    /// An address field could not be parsed.
    #[error("bad address `{text}`: {why}")]
    Address {
        /// The offending text.
        text: String,
        /// What is wrong with it.
        why: String,
    },
    /// A port field could not be parsed.
    #[error("bad port `{text}`: {why}")]
    Port {
        /// The offending text.
        text: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `$NAME` reference to a variable that is not defined (of the right kind).
    #[error("undefined variable `${0}`")]
    UndefinedVariable(String),
    /// The option list is missing, unbalanced, or has trailing text.
    #[error("malformed option list: {0}")]
    Options(String),
    /// An option has a malformed or inconsistent argument.
    #[error("option `{name}`: {why}")]
    Option {
        /// Option name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The rule has no `sid`.
    #[error("rule has no sid")]
    MissingSid,
    /// The same `gid:sid` was already loaded in the same scope.
    #[error("duplicate rule {gid}:{sid} (first loaded from line {first_line})")]
    Duplicate {
        /// Generator id.
        gid: u32,
        /// Signature id.
        sid: u32,
        /// Line of the rule that was kept.
        first_line: usize,
    },
    /// The rule follows a `# device` header whose MAC address could not be parsed, so it is
    /// not known which device it should apply to.
    #[error("rule is under the invalid device header at line {0}")]
    InvalidDeviceScope(usize),
}

impl RuleError {
    /// True when the rule was skipped because it uses something unsupported (as opposed to
    /// being malformed).
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            RuleError::Unsupported(_) | RuleError::UnsupportedProtocol(_)
        )
    }

    pub(crate) fn option(name: &str, why: impl Into<String>) -> RuleError {
        RuleError::Option {
            name: name.to_string(),
            why: why.into(),
        }
    }
}

/// A problem with a line of the rules text that is not a rule (a variable definition, a
/// device header, or a Snort configuration directive this library does not process).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// A `var` / `ipvar` / `portvar` line that could not be parsed; the variable keeps its
    /// previous value (or stays undefined).
    #[error("bad variable definition: {0}")]
    Variable(String),
    /// A `# device` header whose MAC address is malformed. Rules under it are skipped with
    /// [`RuleError::InvalidDeviceScope`].
    #[error("bad device header `{0}`")]
    DeviceHeader(String),
    /// A Snort configuration directive (`include`, `config`, `preprocessor`, ...) or other
    /// text that is neither a comment, a variable nor a rule. It is ignored.
    #[error("ignored line: {0}")]
    Ignored(String),
}
