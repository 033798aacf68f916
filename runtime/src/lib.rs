//! netrun protocol cores (sans-IO).
