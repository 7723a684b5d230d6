//! Replaces secret values with `***` in everything the engine logs or returns:
//! command lines, compose output, error messages. Modelled on Komodo's
//! `replacers`: the secrets are the values of the stack's env files, which
//! compose may echo back (`config`, error messages).

/// What a masked secret is replaced with.
pub const MASK: &str = "***";

/// Values shorter than this are not masked: replacing every `1` or `yes` in
/// the output would destroy it and hide nothing worth hiding.
pub const MIN_SECRET_LEN: usize = 4;

/// A set of secret values to hide. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so a secret that contains another one is replaced whole.
    secrets: Vec<String>,
}

impl Masker {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Masker {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.chars().count() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Masker { secrets }
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    /// This set plus `more`.
    pub fn with(&self, more: &[String]) -> Masker {
        Masker::new(self.secrets.iter().chain(more).cloned())
    }

    /// Whether `secret` is masked (or too short to be).
    pub fn contains(&self, secret: &str) -> bool {
        secret.chars().count() < MIN_SECRET_LEN || self.secrets.iter().any(|s| s == secret)
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_and_ignores_short_values() {
        let m = Masker::new(["hunter22".to_string(), "abc".to_string()]);
        assert_eq!(
            m.mask("PASSWORD=hunter22 again hunter22 abc"),
            "PASSWORD=*** again *** abc"
        );
    }

    #[test]
    fn longer_secret_wins_over_its_prefix() {
        let m = Masker::new(["secret".to_string(), "secret-token".to_string()]);
        assert_eq!(m.mask("x=secret-token y=secret"), "x=*** y=***");
    }

    #[test]
    fn empty_masker_is_identity() {
        let m = Masker::default();
        assert!(m.is_empty());
        assert_eq!(m.mask("nothing to hide"), "nothing to hide");
    }
}
