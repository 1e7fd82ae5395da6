//! A face registers each route once, here, with a one-line summary: the same call adds the handler to
//! the axum `Router` and the operation to the face's OpenAPI description, so the document served at
//! `/api/openapi.json` cannot drift from what is routed. No HTTP semantics live here beyond that.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;
use serde_json::{json, Map, Value};

/// One routed operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub method: Method,
    /// axum's template, `{name}` for a path parameter (the same syntax as OpenAPI's).
    pub path: String,
    pub summary: &'static str,
}

/// A router under construction and the operations it routes.
pub struct Table<S> {
    pub router: Router<S>,
    pub operations: Vec<Operation>,
}

impl<S: Clone + Send + Sync + 'static> Default for Table<S> {
    fn default() -> Self {
        Table {
            router: Router::new(),
            operations: Vec::new(),
        }
    }
}

fn filter(m: &Method) -> MethodFilter {
    match *m {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::DELETE => MethodFilter::DELETE,
        Method::HEAD => MethodFilter::HEAD,
        Method::PATCH => MethodFilter::PATCH,
        Method::OPTIONS => MethodFilter::OPTIONS,
        // Only the methods above are routed by the faces; anything else is a programming error
        // caught by the first test that builds the table.
        _ => panic!("unsupported method {m}"),
    }
}

impl<S: Clone + Send + Sync + 'static> Table<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `method path` to `handler` and documents it. (axum merges the methods of one path.)
    pub fn op<H, T>(mut self, method: Method, path: &str, summary: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.router = self.router.route(path, on(filter(&method), handler));
        // axum answers HEAD with the GET handler; document what is declared.
        self.operations.push(Operation {
            method,
            path: path.to_string(),
            summary,
        });
        self
    }

    pub fn get<H: Handler<T, S>, T: 'static>(self, p: &str, s: &'static str, h: H) -> Self {
        self.op(Method::GET, p, s, h)
    }
    pub fn post<H: Handler<T, S>, T: 'static>(self, p: &str, s: &'static str, h: H) -> Self {
        self.op(Method::POST, p, s, h)
    }
    pub fn put<H: Handler<T, S>, T: 'static>(self, p: &str, s: &'static str, h: H) -> Self {
        self.op(Method::PUT, p, s, h)
    }
    pub fn delete<H: Handler<T, S>, T: 'static>(self, p: &str, s: &'static str, h: H) -> Self {
        self.op(Method::DELETE, p, s, h)
    }

    /// Adds another table's routes and operations.
    pub fn merge(mut self, other: Table<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.operations.extend(other.operations);
        self
    }
}

/// How one face describes its requests and errors in the document.
pub struct Face<'a> {
    pub name: &'static str,
    pub operations: &'a [Operation],
    /// The security scheme its operations require (`None`: unauthenticated), by operation.
    pub security: &'a dyn Fn(&Operation) -> Option<&'static str>,
    /// Media types of request bodies it accepts on POST/PUT, with their schemas.
    pub request_types: &'a [(&'static str, Value)],
    /// Media types of success documents.
    pub response_types: &'a [&'static str],
    /// The error document, by media type.
    pub errors: &'a [(&'static str, Value)],
}

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            json!({
                "name": name.trim_start_matches('*'),
                "in": "path",
                "required": true,
                "schema": {"type": "string"},
            })
        })
        .collect()
}

/// An OpenAPI 3.0 document of the given faces.
pub fn openapi(title: &str, version: &str, faces: &[Face<'_>], schemes: Value) -> Value {
    let mut paths = Map::new();
    for face in faces {
        for op in face.operations {
            let method = op.method.as_str().to_ascii_lowercase();
            let errors: Map<String, Value> = face
                .errors
                .iter()
                .map(|(ct, schema)| (ct.to_string(), json!({"schema": schema})))
                .collect();
            let ok: Map<String, Value> = face
                .response_types
                .iter()
                .map(|ct| (ct.to_string(), json!({})))
                .collect();
            let mut doc = json!({
                "summary": op.summary,
                "operationId": format!("{}_{}_{}", face.name, method, op.path
                    .trim_matches('/')
                    .replace(['/', '{', '}', '-', '.'], "_")),
                "tags": [face.name],
                "parameters": path_parameters(&op.path),
                "responses": {
                    "2XX": {"description": "success", "content": ok},
                    "default": {"description": format!("an error, as the {} face writes them", face.name), "content": errors},
                },
            });
            if matches!(op.method, Method::POST | Method::PUT) && !face.request_types.is_empty() {
                let content: Map<String, Value> = face
                    .request_types
                    .iter()
                    .map(|(ct, schema)| (ct.to_string(), json!({"schema": schema})))
                    .collect();
                doc["requestBody"] = json!({"required": false, "content": content});
            }
            doc["security"] = match (face.security)(op) {
                Some(s) => json!([{ s: [] }]),
                None => json!([]),
            };
            // OpenAPI has no catch-all segments: `{*rest}` is documented as a parameter `rest`.
            let key = op.path.replace("{*", "{");
            if let Value::Object(m) = paths.entry(key).or_insert_with(|| json!({})) {
                m.insert(method, doc);
            }
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"securitySchemes": schemes},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn h() -> &'static str {
        "ok"
    }

    #[test]
    fn the_table_routes_and_documents_the_same_operations() {
        let t: Table<()> = Table::new()
            .get("/a/{id}", "read a", h)
            .put("/a/{id}", "replace a", h)
            .post("/b", "make b", h);
        assert_eq!(t.operations.len(), 3);
        let doc = openapi(
            "t",
            "1",
            &[Face {
                name: "f",
                operations: &t.operations,
                security: &|_| Some("basic"),
                request_types: &[("application/xml", json!({"type": "string"}))],
                response_types: &["application/xml"],
                errors: &[("application/json", json!({"type": "object"}))],
            }],
            json!({"basic": {"type": "http", "scheme": "basic"}}),
        );
        let a = &doc["paths"]["/a/{id}"];
        assert_eq!(a["get"]["summary"], "read a");
        assert_eq!(a["put"]["parameters"][0]["name"], "id");
        assert!(a["put"]["requestBody"].is_object());
        assert!(a["get"]["requestBody"].is_null());
        assert_eq!(
            doc["paths"]["/b"]["post"]["security"][0]["basic"],
            json!([])
        );
    }
}
