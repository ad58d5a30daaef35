//! Decoding a `/v2/keys` request: the method, the key path (percent-decoded and
//! cleaned) and the parameters, from the query string and, for PUT and POST with a form
//! content type, the body — form values first, as Go's `ParseForm` orders them. Bad
//! values get etcd's errors (203 for an index, 202 for a TTL, 209 for a flag). Pure and
//! total: any bytes decode to a request or an error, never a panic.

use super::error::{Code, V2Error};
use super::keyspace::NodePath;

/// The methods of the keys API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET (and HEAD): read or wait.
    Get,
    /// PUT: set, create, update, compare-and-swap, mkdir.
    Put,
    /// POST: create an in-order key below a directory.
    Post,
    /// DELETE: delete, compare-and-delete, rmdir.
    Delete,
}

impl Method {
    /// The method of an HTTP method name; `None` for those etcd answers 405.
    pub fn from_name(name: &str) -> Option<Method> {
        match name {
            "GET" | "HEAD" => Some(Method::Get),
            "PUT" => Some(Method::Put),
            "POST" => Some(Method::Post),
            "DELETE" => Some(Method::Delete),
            _ => None,
        }
    }
}

/// One decoded keys request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRequest {
    /// What to do.
    pub method: Method,
    /// The node.
    pub path: NodePath,
    /// `value` (empty when absent, as Go's `FormValue`).
    pub value: String,
    /// `dir`
    pub dir: bool,
    /// `recursive`
    pub recursive: bool,
    /// `sorted`
    pub sorted: bool,
    /// `wait`
    pub wait: bool,
    /// `waitIndex` (0: from now).
    pub wait_index: u64,
    /// `prevValue`
    pub prev_value: Option<String>,
    /// `prevIndex` (0: none).
    pub prev_index: u64,
    /// `prevExist`
    pub prev_exist: Option<bool>,
    /// `ttl` (`None`: none, or given empty).
    pub ttl: Option<u64>,
    /// `refresh`
    pub refresh: bool,
}

/// Form values in the order they were sent.
#[derive(Debug, Default)]
struct Form(Vec<(String, String)>);

impl Form {
    fn extend(&mut self, bytes: &[u8]) {
        self.0
            .extend(form_urlencoded::parse(bytes).map(|(k, v)| (k.into_owned(), v.into_owned())));
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn value(&self, name: &str) -> &str {
        self.first(name).unwrap_or("")
    }

    fn uint(&self, name: &str, code: Code) -> Result<u64, V2Error> {
        match self.first(name) {
            None => Ok(0),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| V2Error::new(code, format!("invalid value for \"{name}\""))),
        }
    }

    fn flag(&self, name: &str) -> Result<bool, V2Error> {
        match self.first(name) {
            None => Ok(false),
            Some(v) => parse_bool(v).ok_or_else(|| {
                V2Error::new(Code::InvalidField, format!("invalid value for \"{name}\""))
            }),
        }
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The node path of a URL path below `/v2/keys` (still percent-encoded).
pub fn key_path(encoded: &str) -> NodePath {
    let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
    NodePath::clean(&decoded)
}

/// Decodes a request. `body` is the body of a PUT or POST whose content type is
/// `application/x-www-form-urlencoded` (`None` otherwise).
pub fn parse(
    method: Method,
    encoded_path: &str,
    query: Option<&str>,
    body: Option<&[u8]>,
) -> Result<KeyRequest, V2Error> {
    let mut form = Form::default();
    if matches!(method, Method::Put | Method::Post) {
        if let Some(body) = body {
            form.extend(body);
        }
    }
    form.extend(query.unwrap_or("").as_bytes());

    let prev_index = form.uint("prevIndex", Code::IndexNaN)?;
    let wait_index = form.uint("waitIndex", Code::IndexNaN)?;
    let recursive = form.flag("recursive")?;
    let sorted = form.flag("sorted")?;
    let wait = form.flag("wait")?;
    let dir = form.flag("dir")?;
    form.flag("quorum")?;
    form.flag("stream")?;
    if wait && method != Method::Get {
        return Err(V2Error::new(
            Code::InvalidField,
            "wait is only supported on GET requests",
        ));
    }
    let prev_value = match form.first("prevValue") {
        Some("") => {
            return Err(V2Error::new(
                Code::PrevValueRequired,
                "prevValue cannot be empty",
            ))
        }
        other => other.map(str::to_string),
    };
    form.flag("noValueOnSuccess")?;
    let ttl = match form.value("ttl") {
        "" => None,
        text => Some(
            text.parse::<u64>()
                .map_err(|_| V2Error::new(Code::TtlNaN, "invalid value for \"ttl\""))?,
        ),
    };
    let prev_exist = match form.first("prevExist") {
        None => None,
        Some(v) => Some(
            parse_bool(v)
                .ok_or_else(|| V2Error::new(Code::InvalidField, "invalid value for prevExist"))?,
        ),
    };
    let refresh = form.flag("refresh")?;
    let value = form.value("value").to_string();
    if refresh {
        if !value.is_empty() {
            return Err(V2Error::new(
                Code::RefreshValue,
                "A value was provided on a refresh",
            ));
        }
        if ttl.is_none() {
            return Err(V2Error::new(Code::RefreshTtlRequired, "No TTL value set"));
        }
    }
    Ok(KeyRequest {
        method,
        path: key_path(encoded_path),
        value,
        dir,
        recursive,
        sorted,
        wait,
        wait_index,
        prev_value,
        prev_index,
        prev_exist,
        ttl,
        refresh,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_come_before_query_values() {
        let r = parse(
            Method::Put,
            "/a%20b//c/",
            Some("value=q&ttl=5"),
            Some(b"value=b+c%21&prevExist=false"),
        )
        .unwrap();
        assert_eq!(r.path.as_str(), "/a b/c");
        assert_eq!(r.value, "b c!");
        assert_eq!(r.ttl, Some(5));
        assert_eq!(r.prev_exist, Some(false));
    }

    #[test]
    fn bad_values_get_etcds_errors() {
        let err = |q: &str| parse(Method::Put, "/k", Some(q), None).unwrap_err();
        assert_eq!(err("prevIndex=x").code, Code::IndexNaN);
        assert_eq!(err("prevIndex=x").cause, "invalid value for \"prevIndex\"");
        assert_eq!(err("waitIndex=-1").code, Code::IndexNaN);
        assert_eq!(err("ttl=-1").code, Code::TtlNaN);
        assert_eq!(err("ttl=abc").cause, "invalid value for \"ttl\"");
        assert_eq!(err("recursive=maybe").code, Code::InvalidField);
        assert_eq!(err("prevExist=maybe").cause, "invalid value for prevExist");
        assert_eq!(err("prevValue=").code, Code::PrevValueRequired);
        assert_eq!(err("wait=true").code, Code::InvalidField);
        assert_eq!(err("refresh=true&value=1&ttl=1").code, Code::RefreshValue);
        assert_eq!(err("refresh=true").code, Code::RefreshTtlRequired);
        assert_eq!(err("ttl=99999999999999999999").code, Code::TtlNaN);
    }

    #[test]
    fn a_delete_body_is_not_read() {
        let r = parse(Method::Delete, "/k", None, Some(b"dir=true")).unwrap();
        assert!(!r.dir);
        assert_eq!(Method::from_name("PATCH"), None);
    }
}
