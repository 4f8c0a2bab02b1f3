//! The model catalog (built-in data in `catalog/`), memory fit and Hugging Face downloads.
