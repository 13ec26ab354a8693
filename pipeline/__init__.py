"""pipe: predict social media popularity from cached deep features."""
