"""Board definitions as data (TOML) and their loader: ``load_board(name)``, ``list_boards()``."""

from edgeward.boards.loader import Board, list_boards, load_board

__all__ = ["Board", "list_boards", "load_board"]
