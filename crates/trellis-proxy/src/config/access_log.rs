//! `accessLog:` in the proxy configuration: one line per answered request.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// How requests are logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `json` (default): one JSON object per line; `text`: one readable line.
    #[serde(default)]
    pub format: AccessLogFormat,
    /// `stdout` (default) or an absolute file path, appended to.
    #[serde(default)]
    pub output: AccessLogOutput,
}

/// Access log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    #[default]
    Json,
    Text,
}

/// Where access log lines go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AccessLogOutput {
    #[default]
    Stdout,
    File(PathBuf),
}

impl AccessLogOutput {
    /// `stdout`, or an absolute path.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "stdout" {
            return Ok(Self::Stdout);
        }
        let path = PathBuf::from(text);
        if path.is_absolute() && !text.ends_with('/') {
            return Ok(Self::File(path));
        }
        Err(format!(
            "expected \"stdout\" or an absolute file path, got {text:?}"
        ))
    }
}

impl std::fmt::Display for AccessLogOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Serialize for AccessLogOutput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccessLogOutput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl AccessLogConfig {
    /// The wire form's `format` and `output`, checked.
    pub fn from_wire(format: &str, output: &str) -> Result<Self, ConfigError> {
        let format = match format {
            "json" | "" => AccessLogFormat::Json,
            "text" => AccessLogFormat::Text,
            other => {
                return Err(ConfigError::invalid(
                    "accessLog.format",
                    format!("expected json or text, got {other:?}"),
                ))
            }
        };
        let output = AccessLogOutput::parse(output)
            .map_err(|message| ConfigError::invalid("accessLog.output", message))?;
        Ok(Self { format, output })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_stdout_or_absolute_paths() {
        assert_eq!(
            AccessLogOutput::parse("stdout"),
            Ok(AccessLogOutput::Stdout)
        );
        assert_eq!(
            AccessLogOutput::parse("/var/log/trellis.log"),
            Ok(AccessLogOutput::File("/var/log/trellis.log".into()))
        );
        for bad in ["", "relative.log", "/var/log/", "stderr"] {
            assert!(AccessLogOutput::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_wire_form_is_checked() {
        let config = AccessLogConfig::from_wire("text", "/tmp/a.log").expect("valid");
        assert_eq!(config.format, AccessLogFormat::Text);
        let err = AccessLogConfig::from_wire("xml", "stdout").expect_err("bad format");
        assert!(err.to_string().contains("accessLog.format"), "{err}");
    }
}
