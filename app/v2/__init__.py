"""Open Inference Protocol (KServe V2) REST endpoints beside the upload endpoints."""

from app.v2.routes import router

__all__ = ["router"]
