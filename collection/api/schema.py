"""The OpenAPI document of API v1 says what the server does, errors included.

drf-spectacular documents the success of each operation from its serializers; what it cannot see
is added here, from the operation and its view, so that no endpoint can forget it:

- the error responses each operation can give, all in the one error shape (collection.api.errors):
  400 where it takes input, 403 for a refused token, 404 for an unknown id or a page past the end,
  413/415 where it reads a body, 429 where it is rate-limited (with ``Retry-After``);
- that no text input may contain a NUL character: PostgreSQL cannot store or search one, and
  Django's form and serializer fields refuse it with a 400;
- that a filter may be given empty (``allowEmptyValue``), meaning no filter, as forms send them.
"""

from __future__ import annotations

from drf_spectacular import openapi

from collection.api.errors import ErrorsSerializer

NO_NUL_PATTERN = r"^[^\x00]*$"

ERROR_DESCRIPTIONS = {
    "400": "The input was refused: the reasons, per parameter or field.",
    "403": "The credentials were refused: an unknown token, or a session without its CSRF token.",
    "404": "No such resource, or a page past the last one.",
    "413": "The request is larger than the server accepts (two photos' worth by default).",
    "415": "The body is not in one of the media types listed for this operation.",
    "429": "Too many requests from this client; try again after Retry-After seconds.",
}


def forbid_nul(schema: dict) -> None:
    """Add the no-NUL pattern to a free-text string schema (not to enums, formats or own patterns)."""
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        forbid_nul(schema["items"])
    elif schema.get("type") == "string" and not schema.keys() & {"enum", "format", "pattern"}:
        schema["pattern"] = NO_NUL_PATTERN


def admits_empty(schema: dict) -> bool:
    """Whether "" is already valid (free text, or a list whose items may be empty): no need to say so."""
    if schema.get("type") == "array":
        return True  # ?mint= is a list of one empty item, which the item pattern allows
    return schema.get("type") == "string" and "enum" not in schema and not schema.get("minLength")


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema, plus the errors and input rules above (DEFAULT_SCHEMA_CLASS)."""

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is None or not self.path.startswith("/api/"):
            return operation  # the linked-data documents follow their own standards and describe themselves
        filters = {parameter["name"] for parameter in self._get_filter_parameters()}
        for parameter in operation.get("parameters", []):
            forbid_nul(parameter["schema"])
            if parameter["name"] in filters and not parameter.get("required") and not admits_empty(parameter["schema"]):
                # An empty filter is no filter, as the collection page's form sends it (?date_from=&sort=).
                parameter["allowEmptyValue"] = True
        responses = operation["responses"]
        errors = self.resolve_serializer(ErrorsSerializer, "response").ref
        for code in self.error_codes(operation):
            response = responses.setdefault(code, {"content": {"application/json": {"schema": errors}}})
            response["description"] = response.get("description") or ERROR_DESCRIPTIONS[code]
        if "429" in responses:
            responses["429"]["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds until a request is allowed."}
            }
        for code, links in getattr(self.view, "schema_links", {}).items():
            responses[code]["links"] = links
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def error_codes(self, operation: dict) -> list[str]:
        """The error statuses this operation can answer, from its parameters, body and view."""
        parameters = operation.get("parameters", [])
        takes_query = any(p["in"] == "query" for p in parameters)
        has_body = "requestBody" in operation
        codes = ["403"]  # authentication runs first on every API view: a bad token is refused anywhere
        if takes_query or has_body:
            codes.append("400")
        if any(p["in"] == "path" for p in parameters) or any(p["name"] == "page" for p in parameters):
            codes.append("404")
        if has_body:
            codes += ["413", "415"]
        if self.view.get_throttles():
            codes.append("429")
        return sorted(codes)

    def _map_basic_serializer(self, serializer, direction):
        # Here, after drf-spectacular's own validators: a pattern added before them would make it
        # wrap a blank-allowed field in an ambiguous oneOf (the pattern matches "" as well).
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and self.path.startswith("/api/"):
            for field_schema in schema.get("properties", {}).values():
                forbid_nul(field_schema)
        return schema
