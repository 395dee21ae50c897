"""The error of a setting refused before any weights load: it names the setting (and the CLI its flag)."""

from __future__ import annotations

__all__ = ["SettingError"]


class SettingError(ValueError):
    """A setting refused before any weights load: ``setting`` names it (``"layers"``, ``"device_map"``).

    ``str(err)`` is ``"<setting>: <message>"``; the command line prints ``argument <flag>: <message>``.

    Listed on the book page ``api``.
    """

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting, self.message = setting, message
