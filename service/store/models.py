"""The store's tables as SQLAlchemy 2 typed declarative models.

Keys are the external MovieLens ids (``BigInteger``), not surrogate keys: the trainer's artifacts and the
service's URLs speak those ids, so no mapping table is needed.  The schema itself is created and changed
only by the Alembic migrations in ``service/store/migrations``; these classes must match them (a test
compares the two), and application code never calls ``metadata.create_all``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Dialect, Float, ForeignKey, Index, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: Constraint names the migrations spell out too, so that both dialects name things identically.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class FloatValue(TypeDecorator[float]):
    """``Float`` that always reads back a Python float.

    SQLite stores 4.0 in a REAL column compactly and ``INSERT ... RETURNING`` hands it back as the integer
    4; this keeps ``Rating.rating`` a float on every path and back end.  The column type is plain Float.
    """

    impl = Float
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> float | None:
        return None if value is None else float(value)


class Base(DeclarativeBase):
    """Declarative base of the store; ``Base.metadata`` is the migrations' autogenerate target."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Movie(Base):
    """A movie: its MovieLens id, title as shipped (with the year), parsed year and '|'-joined genres."""

    __tablename__ = "movies"

    movie_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(String, nullable=False, default="", server_default="")
    year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    genres: Mapped[str] = mapped_column(String, nullable=False, default="", server_default="")

    def genre_list(self) -> list[str]:
        """The genres as a list ("Comedy|Drama" -> ["Comedy", "Drama"]; "" -> [])."""
        return [g for g in self.genres.split("|") if g]

    def __repr__(self) -> str:
        return f"Movie(movie_id={self.movie_id!r}, title={self.title!r}, year={self.year!r})"


class Rating(Base):
    """One user's rating of one movie; a user rates a movie at most once (the primary key)."""

    __tablename__ = "ratings"
    __table_args__ = (Index("ix_ratings_movie_id", "movie_id"),)

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    movie_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("movies.movie_id"), primary_key=True)
    rating: Mapped[float] = mapped_column(FloatValue, nullable=False)
    #: Seconds since the epoch (UTC), as MovieLens writes them.
    timestamp: Mapped[int] = mapped_column(BigInteger, nullable=False)

    def __repr__(self) -> str:
        return (
            f"Rating(user_id={self.user_id!r}, movie_id={self.movie_id!r}, rating={self.rating!r}, "
            f"timestamp={self.timestamp!r})"
        )
