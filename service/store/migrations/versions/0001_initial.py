"""Initial schema: movies and ratings.

Revision ID: 0001
Revises:
Create Date: 2024-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "movies",
        sa.Column("movie_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("title", sa.String(), server_default="", nullable=False),
        sa.Column("year", sa.Integer(), nullable=True),
        sa.Column("genres", sa.String(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("movie_id", name="pk_movies"),
    )
    op.create_table(
        "ratings",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("movie_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("rating", sa.Float(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["movie_id"], ["movies.movie_id"], name="fk_ratings_movie_id_movies"),
        sa.PrimaryKeyConstraint("user_id", "movie_id", name="pk_ratings"),
    )
    op.create_index("ix_ratings_movie_id", "ratings", ["movie_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ratings_movie_id", table_name="ratings")
    op.drop_table("ratings")
    op.drop_table("movies")
