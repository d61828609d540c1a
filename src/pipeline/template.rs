//! Topic and subject templates over header fields, e.g.
//! `{env}.{source}.{title}.{category}-v{version}` or `{topic}-value`.

use crate::envelope::{HeaderFields, TopicName};
use std::fmt::Write;

/// A placeholder a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Env,
    Source,
    Title,
    Category,
    Version,
    /// The canonical topic name.
    Topic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Field),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// A template that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{name}` with an unknown name.
    #[error("unknown placeholder {{{0}}} in {1:?}; expected one of {{env}}, {{source}}, {{title}}, {{category}}, {{version}}, {{topic}}")]
    UnknownPlaceholder(String, String),
    /// A `{` without its `}`.
    #[error("unclosed '{{' in {0:?}")]
    Unclosed(String),
    /// A literal character that Kafka does not allow in topic names.
    #[error("{1:?} may not appear in a topic template ({0:?}); Kafka topics use [A-Za-z0-9._-]")]
    IllegalTopicChar(String, char),
}

impl Template {
    /// Parses `{placeholder}`s and literal text.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(source.to_owned()))?;
            let name = &rest[open + 1..open + close];
            parts.push(Part::Field(match name {
                "env" => Field::Env,
                "source" => Field::Source,
                "title" => Field::Title,
                "category" => Field::Category,
                "version" => Field::Version,
                "topic" => Field::Topic,
                _ => {
                    return Err(TemplateError::UnknownPlaceholder(
                        name.to_owned(),
                        source.to_owned(),
                    ))
                }
            }));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    /// Parses a template whose output is a topic name: literals must be
    /// legal topic characters (placeholders render validated segments).
    pub fn parse_topic(source: &str) -> Result<Self, TemplateError> {
        let t = Self::parse(source)?;
        for p in &t.parts {
            if let Part::Literal(l) = p {
                if let Some(c) = l
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
                {
                    return Err(TemplateError::IllegalTopicChar(source.to_owned(), c));
                }
            }
        }
        Ok(t)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Renders the template for a header.
    pub fn render(&self, h: &(impl HeaderFields + ?Sized)) -> String {
        let mut out = String::with_capacity(64);
        for p in &self.parts {
            let _ = match p {
                Part::Literal(l) => out.write_str(l),
                Part::Field(Field::Env) => out.write_str(h.env()),
                Part::Field(Field::Source) => out.write_str(h.source()),
                Part::Field(Field::Title) => out.write_str(h.title()),
                Part::Field(Field::Category) => out.write_str(h.category()),
                Part::Field(Field::Version) => write!(out, "{}", h.version()),
                Part::Field(Field::Topic) => write!(out, "{}", TopicName(h)),
            };
        }
        out
    }
}

/// The canonical topic template.
pub const CANONICAL_TOPIC: &str = "{env}.{source}.{title}.{category}-v{version}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::proto::Header;

    fn header() -> Header {
        Header {
            env: "prod".into(),
            source: "glutton".into(),
            title: "1234".into(),
            category: "telemetry_match_event".into(),
            version: 3,
            ..Default::default()
        }
    }

    #[test]
    fn renders_fields_and_the_canonical_topic() {
        let t = Template::parse_topic(CANONICAL_TOPIC).unwrap();
        assert_eq!(
            t.render(&header()),
            "prod.glutton.1234.telemetry_match_event-v3"
        );
        let s = Template::parse("{topic}-value").unwrap();
        assert_eq!(
            s.render(&header()),
            "prod.glutton.1234.telemetry_match_event-v3-value"
        );
        let s = Template::parse("{category}-v{version}").unwrap();
        assert_eq!(s.render(&header()), "telemetry_match_event-v3");
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(matches!(
            Template::parse("{nope}"),
            Err(TemplateError::UnknownPlaceholder(..))
        ));
        assert!(matches!(
            Template::parse("a{env"),
            Err(TemplateError::Unclosed(_))
        ));
        assert!(matches!(
            Template::parse_topic("lake/{env}"),
            Err(TemplateError::IllegalTopicChar(_, '/'))
        ));
        assert!(Template::parse_topic("lake.{env}.all").is_ok());
    }
}
