//! Chat templates: a tokenizer's Jinja `chat_template` (from `tokenizer_config.json`, or a GGUF
//! file's `tokenizer.chat_template`) rendered as transformers' `apply_chat_template` renders it:
//! trimmed and left-stripped blocks, loop controls, `raise_exception`, Python string methods, and
//! the special tokens (`bos_token`, `eos_token`, …) in scope.

use minijinja::{Environment, ErrorKind, context};

use super::HfError;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    /// A user turn.
    pub fn user(content: &str) -> Self {
        Message {
            role: "user".into(),
            content: content.to_string(),
        }
    }

    /// An assistant turn.
    pub fn assistant(content: &str) -> Self {
        Message {
            role: "assistant".into(),
            content: content.to_string(),
        }
    }
}

/// A chat template with the special tokens it may name.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    template: String,
    /// `bos_token`, `eos_token`, `pad_token`, `unk_token` as the tokenizer config names them.
    tokens: serde_json::Map<String, serde_json::Value>,
    file: String,
}

impl ChatTemplate {
    /// The template of a `tokenizer_config.json` (`file` names it in errors); None when it has
    /// none. A list of named templates gives its `default` one.
    pub fn from_tokenizer_config(bytes: &[u8], file: &str) -> Result<Option<Self>, HfError> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| HfError::Json {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        let template = match &v["chat_template"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(named) => match named
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
            {
                Some(t) => t.to_string(),
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        let mut tokens = serde_json::Map::new();
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            // Either a string or an AddedToken object with `content`.
            let t = match &v[key] {
                serde_json::Value::String(s) => Some(s.clone()),
                other => other["content"].as_str().map(str::to_string),
            };
            if let Some(t) = t {
                tokens.insert(key.to_string(), t.into());
            }
        }
        let t = ChatTemplate {
            template,
            tokens,
            file: file.to_string(),
        };
        // Refuse a template that does not even parse, once, here.
        t.environment()?;
        Ok(Some(t))
    }

    /// The end-of-sequence token the template's tokenizer config names (ChatML's `<|im_end|>`
    /// for instruction-tuned models), where generation of an assistant turn stops.
    pub fn eos_token(&self) -> Option<&str> {
        self.tokens.get("eos_token").and_then(|v| v.as_str())
    }

    /// Id of [`Self::eos_token`] in `tok` (where an assistant turn ends), else `tok`'s EOS.
    pub fn end_of_turn_id(&self, tok: &super::Tokenizer) -> Option<u32> {
        self.eos_token()
            .and_then(|t| tok.token_id(t))
            .or(tok.eos_id)
    }

    fn error(&self, e: minijinja::Error) -> HfError {
        HfError::Tokenizer {
            file: self.file.clone(),
            message: format!("chat_template: {e}"),
        }
    }

    fn environment(&self) -> Result<Environment<'_>, HfError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template("chat", &self.template)
            .map_err(|e| self.error(e))?;
        Ok(env)
    }

    /// The conversation as the model's prompt text; with `add_generation_prompt`, followed by
    /// the opening of an assistant turn.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, HfError> {
        let env = self.environment()?;
        let template = env.get_template("chat").map_err(|e| self.error(e))?;
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            // transformers passes these as None; undefined would not test `is none`.
            tools => (),
            documents => (),
            ..minijinja::Value::from_serialize(&self.tokens)
        };
        template.render(ctx).map_err(|e| self.error(e))
    }

    /// A conversation ending in an assistant turn, split as training needs it: the prompt (every
    /// turn before, plus the assistant turn's opening) and the response (the rest of the text:
    /// the assistant's content and the template's end-of-turn tokens).
    pub fn split_last_turn(&self, messages: &[Message]) -> Result<(String, String), HfError> {
        let Some((last, before)) = messages.split_last() else {
            return Err(self.error(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "no messages",
            )));
        };
        if last.role != "assistant" {
            return Err(self.error(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "`messages` must end with an assistant turn",
            )));
        }
        let prompt = self.render(before, true)?;
        let full = self.render(messages, false)?;
        match full.strip_prefix(&prompt) {
            Some(response) => Ok((prompt, response.to_string())),
            None => Err(self.error(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "the conversation does not start with its prompt as the template renders them, so the assistant turn cannot be told apart",
            ))),
        }
    }
}
