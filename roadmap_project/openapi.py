"""OpenAPI components the views reference by name; plain data, so the settings
(SPECTACULAR_SETTINGS["APPEND_COMPONENTS"]) can import it."""

# A 400 names the fields at fault, nested as deep as the input (a framework's
# stages, modules and concepts); a list's messages per item, `{}` for a valid item.
# A body that is not JSON at all answers `{"detail": "JSON parse error - …"}`.
ERROR_TREE = "ValidationErrorTree"
VALIDATION_ERROR_COMPONENTS = {
    ERROR_TREE: {
        "description": "A message, a list of messages or of per-item errors, or errors "
        "keyed by field.",
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"$ref": f"#/components/schemas/{ERROR_TREE}"}},
            {
                "type": "object",
                "additionalProperties": {"$ref": f"#/components/schemas/{ERROR_TREE}"},
            },
        ],
    },
}
