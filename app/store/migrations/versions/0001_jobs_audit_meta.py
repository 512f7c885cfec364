"""jobs, audit and meta tables

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("models_key", sa.String(2048), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("failing_since", sa.DateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("key_name", sa.String(64), nullable=True),
    )
    op.create_index("ix_jobs_study_models", "jobs", ["study_instance_uid", "models_key"])
    op.create_index("ix_jobs_claim", "jobs", ["status", "next_attempt_at"])
    op.create_index("ix_jobs_created", "jobs", ["created"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("key_name", sa.String(64), nullable=True),
        sa.Column("endpoint", sa.String(128), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("model_sha256", sa.String(64), nullable=True),
        sa.Column("upload_sha256", sa.String(64), nullable=True),
        sa.Column("study_hash", sa.String(64), nullable=True),
        sa.Column("series_hash", sa.String(64), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
    )
    op.create_index("ix_audit_time", "audit", ["time"])
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("meta")
    op.drop_index("ix_audit_time", "audit")
    op.drop_table("audit")
    op.drop_index("ix_jobs_created", "jobs")
    op.drop_index("ix_jobs_claim", "jobs")
    op.drop_index("ix_jobs_study_models", "jobs")
    op.drop_table("jobs")
