//! Checks shared by the request validators of every service.

use crate::FieldError;

/// Trimmed text of 1 to `max` characters without control characters; a
/// field error naming `field` otherwise. Returns the trimmed text.
pub fn text(errors: &mut Vec<FieldError>, field: &str, value: &str, max: usize) -> String {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if trimmed.chars().count() > max {
        errors.push(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    } else if trimmed.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    trimmed.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        let mut errors = Vec::new();
        assert_eq!(text(&mut errors, "name", "  Ada ", 10), "Ada");
        assert!(errors.is_empty());
        text(&mut errors, "name", "   ", 10);
        text(&mut errors, "city", "x".repeat(11).as_str(), 10);
        text(&mut errors, "line1", "a\u{7}b", 10);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "city", "line1"]);
    }
}
