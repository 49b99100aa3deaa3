"""The OpenAPI schema and the self-hosted Swagger UI; neither exists in production."""

from __future__ import annotations

from typing import Any

from litestar._openapi.schema_generation import SchemaCreator
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, Example, Schema, SecurityScheme
from litestar.router import Router
from litestar.static_files import create_static_files_router
from litestar.typing import FieldDefinition
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from notifier import __version__
from notifier.api.schemas import ProblemDetail

ASSETS = "/schema/assets"
SECURITY: list[dict[str, list[str]]] = [{"BearerKey": []}]

_PROBLEMS: dict[int, tuple[str, str, str]] = {
    400: (
        "malformed-body",
        "The body is not JSON",
        "The request body is not valid JSON.",
    ),
    401: ("unauthorized", "No valid API key", "The API key is not valid."),
    403: (
        "forbidden",
        "The key lacks a scope",
        "The API key 'ci' lacks the 'send' scope.",
    ),
    404: ("not-found", "No such delivery", "No delivery has the id 'x'."),
    409: ("conflict", "The delivery is in the wrong state", "Delivery 'x' is sent."),
    413: ("request-entity-too-large", "Request Entity Too Large", "Too large."),
    415: (
        "unsupported-media-type",
        "Unsupported Media Type",
        "Send the body as application/json, not 'text/plain'.",
    ),
    422: ("validation-error", "The request is not valid", "1 field(s) failed."),
    429: ("too-many-requests", "Too Many Requests", "Too Many Requests"),
}


def problems(*codes: int) -> dict[int, ResponseSpec]:
    """Return the documented problem+json answers for these status codes."""
    specs = {}
    for code in codes:
        slug, title, detail = _PROBLEMS[code]
        value: dict[str, Any] = {
            "type": f"urn:notifier:problem:{slug}",
            "title": title,
            "status": code,
            "detail": detail,
        }
        if code == 422:
            value["errors"] = [
                {"field": "send_at", "reason": "must carry a UTC offset"}
            ]
        specs[code] = ResponseSpec(
            data_container=ProblemDetail,
            generate_examples=False,
            description=title,
            media_type="application/problem+json",
            examples=[Example(summary=title, value=value)],
        )
    return specs


def openapi_config() -> OpenAPIConfig:
    """Return the schema config: Swagger UI at /schema, JSON at /schema/openapi.json.

    The UI's scripts and styles come from the swagger-ui-bundle package and
    are served by notifier itself, so the page works with no internet access.
    """
    swagger = SwaggerRenderPlugin(
        path="/",
        js_url=f"{ASSETS}/swagger-ui-bundle.js",
        css_url=f"{ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
        favicon="",  # Litestar's default icon comes from a CDN
    )
    return OpenAPIConfig(
        title="notifier",
        version=__version__,
        description="Send one text to many Telegram, WhatsApp and Viber recipients, "
        "now or later, through emulated messengers whose inboxes you can read.",
        path="/schema",
        render_plugins=[swagger, JsonRenderPlugin()],
        components=Components(
            security_schemes={
                "BearerKey": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="An API key made with `notifier keys create`.",
                )
            }
        ),
    )


def assets_router() -> Router:
    """Serve Swagger UI's files from the installed package."""
    return create_static_files_router(
        path=ASSETS, directories=[swagger_ui_path], include_in_schema=False
    )


class ClosedStructs(StructSchemaPlugin):
    """Document a Struct that refuses unknown fields as additionalProperties: false.

    Litestar's own plugin leaves the schema open, so schema-driven clients
    would think that ``{"sendAt": ...}`` is allowed.
    """

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        """Take the Structs that forbid unknown fields; Litestar has the rest."""
        return super().is_plugin_supported_field(field_definition) and bool(
            field_definition.annotation.__struct_config__.forbid_unknown_fields
        )

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        """Build Litestar's schema, then close it."""
        schema = super().to_openapi_schema(field_definition, schema_creator)
        schema.additional_properties = False
        return schema
