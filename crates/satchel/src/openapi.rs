//! `GET /api/openapi.json`: both faces described from their own route tables (`satchel_api_doc`), so
//! the document lists exactly what is routed. Schemas are given where the wire format is fixed (the
//! two error documents); UForge documents are XML or JSON bindings of the SDK's schema and are left
//! open here.

use satchel_api_doc::{openapi, Face, Operation};
use serde_json::{json, Value};

pub fn document() -> Value {
    let uforge = satchel_api_uforge::operations();
    let cloud = satchel_api_cloudapi::operations();
    let uforge_error = json!({
        "type": "object",
        "required": ["localizedErrorMsg", "requestMethod", "requestUri", "statusCode", "timestamp"],
        "properties": {
            "localizedErrorMsg": {
                "type": "object",
                "required": ["message"],
                "properties": {"message": {"type": "string"}},
            },
            "requestMethod": {"type": "string"},
            "requestUri": {"type": "string"},
            "statusCode": {"type": "integer"},
            "timestamp": {"type": "string"},
        },
    });
    let cloud_error = json!({
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    });
    let uforge_security = |op: &Operation| (op.path != "/api/status").then_some("uforgeBasic");
    let cloud_security = |_: &Operation| Some("httpSignature");
    openapi(
        "Satchel",
        env!("CARGO_PKG_VERSION"),
        &[
            Face {
                name: "uforge",
                operations: &uforge,
                security: &uforge_security,
                request_types: &[
                    ("application/xml", json!({"type": "string"})),
                    ("application/json", json!({"type": "object"})),
                    (
                        "application/octet-stream",
                        json!({"type": "string", "format": "binary"}),
                    ),
                ],
                response_types: &["application/xml", "application/json"],
                errors: &[
                    ("application/json", uforge_error),
                    ("application/xml", json!({"type": "string"})),
                ],
            },
            Face {
                name: "cloudapi",
                operations: &cloud,
                security: &cloud_security,
                request_types: &[
                    ("application/json", json!({"type": "object"})),
                    (
                        "application/octet-stream",
                        json!({"type": "string", "format": "binary"}),
                    ),
                ],
                response_types: &["application/json"],
                errors: &[("application/json", cloud_error)],
            },
        ],
        json!({
            "uforgeBasic": {"type": "http", "scheme": "basic"},
            "httpSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "HTTP Signature with an SSH key registered to the account, covering Date",
            },
        }),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_routed_operation_is_documented_once() {
        let doc = super::document();
        let paths = doc["paths"].as_object().expect("paths");
        let count: usize = paths
            .values()
            .map(|p| p.as_object().map_or(0, |m| m.len()))
            .sum();
        assert_eq!(
            count,
            satchel_api_uforge::operations().len() + satchel_api_cloudapi::operations().len()
        );
        assert!(paths["/api/users/{uid}/mysoftware/{msid}/exports"]["post"].is_object());
        assert!(paths["/{login}/images/{id}"]["post"].is_object());
        assert_eq!(
            paths["/api/status"]["get"]["security"],
            serde_json::json!([])
        );
    }
}
