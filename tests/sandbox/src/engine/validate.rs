//! Request-shape checks shared by the endpoints: TikTok answers 40000 for fields outside its fragments,
//! wrong types, bad enums and out-of-range limits.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{Reject, codes, reject};

pub(crate) fn only_fields(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), Reject> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(reject(codes::INVALID_PARAMS, format!("unknown field {k}"))),
        None => Ok(()),
    }
}

pub(crate) fn only_query(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), Reject> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(reject(
            codes::INVALID_PARAMS,
            format!("unknown parameter {k}"),
        )),
        None => Ok(()),
    }
}

pub(crate) fn req_str(body: &Map<String, Value>, name: &str) -> Result<String, Reject> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(reject(
            codes::INVALID_PARAMS,
            format!("{name} must be a string"),
        )),
        None => Err(reject(codes::INVALID_PARAMS, format!("{name} is required"))),
    }
}

pub(crate) fn opt_str(body: &Map<String, Value>, name: &str) -> Result<Option<String>, Reject> {
    match body.get(name) {
        None => Ok(None),
        Some(_) => req_str(body, name).map(Some),
    }
}

pub(crate) fn opt_bool(body: &Map<String, Value>, name: &str) -> Result<Option<bool>, Reject> {
    match body.get(name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(reject(
            codes::INVALID_PARAMS,
            format!("{name} must be a boolean"),
        )),
    }
}

/// `context_info` is an object in TikTok's fragments (app and user context); its content is not checked.
pub(crate) fn opt_object(body: &Map<String, Value>, name: &str) -> Result<(), Reject> {
    match body.get(name) {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(reject(
            codes::INVALID_PARAMS,
            format!("{name} must be an object"),
        )),
    }
}

pub(crate) fn check_len(name: &str, s: &str, min: usize, max: usize) -> Result<(), Reject> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(reject(
            codes::INVALID_PARAMS,
            format!("{name} must have {min}-{max} characters"),
        ));
    }
    Ok(())
}

pub(crate) fn check_file_paths(paths: &[String]) -> Result<(), Reject> {
    match paths.iter().find(|p| p.chars().count() != 16) {
        Some(p) => Err(reject(
            codes::INVALID_PARAMS,
            format!("file_path {p} must have 16 characters"),
        )),
        None => Ok(()),
    }
}

pub(crate) fn str_array(
    v: &Value,
    name: &str,
    min: usize,
    max: usize,
) -> Result<Vec<String>, Reject> {
    let Value::Array(items) = v else {
        return Err(reject(
            codes::INVALID_PARAMS,
            format!("{name} must be an array of strings"),
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for i in items {
        match i {
            Value::String(s) => out.push(s.clone()),
            _ => {
                return Err(reject(
                    codes::INVALID_PARAMS,
                    format!("{name} items must be strings"),
                ));
            }
        }
    }
    if out.len() < min || out.len() > max {
        return Err(reject(
            codes::INVALID_PARAMS,
            format!("{name} must have {min}-{max} items"),
        ));
    }
    Ok(out)
}

pub(crate) fn req_str_array(
    body: &Map<String, Value>,
    name: &str,
    min: usize,
    max: usize,
) -> Result<Vec<String>, Reject> {
    match body.get(name) {
        Some(v) => str_array(v, name, min, max),
        None => Err(reject(codes::INVALID_PARAMS, format!("{name} is required"))),
    }
}

pub(crate) fn parse_str_array(raw: &str, name: &str) -> Result<Vec<String>, Reject> {
    let v: Value = serde_json::from_str(raw).map_err(|_| {
        reject(
            codes::INVALID_PARAMS,
            format!("{name} must be a JSON array of strings"),
        )
    })?;
    str_array(&v, name, 0, usize::MAX)
}

pub(crate) fn query_str_array(
    q: &HashMap<String, String>,
    name: &str,
    required: bool,
    min: usize,
    max: usize,
) -> Result<Vec<String>, Reject> {
    match q.get(name) {
        Some(raw) => {
            let v: Value = serde_json::from_str(raw).map_err(|_| {
                reject(
                    codes::INVALID_PARAMS,
                    format!("{name} must be a JSON array of strings"),
                )
            })?;
            str_array(&v, name, min, max)
        }
        None if required => Err(reject(codes::INVALID_PARAMS, format!("{name} is required"))),
        None => Ok(Vec::new()),
    }
}

pub(crate) fn query_int(
    q: &HashMap<String, String>,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, Reject> {
    match q.get(name) {
        None => Ok(default),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(reject(
                codes::INVALID_PARAMS,
                format!("{name} must be an integer in [{min}, {max}]"),
            )),
        },
    }
}

pub(crate) fn query_required(q: &HashMap<String, String>, name: &str) -> Result<String, Reject> {
    q.get(name)
        .cloned()
        .ok_or_else(|| reject(codes::INVALID_PARAMS, format!("{name} is required")))
}
