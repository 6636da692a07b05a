//! `x-kubernetes-validations` rules.
mod decl;
mod library;
