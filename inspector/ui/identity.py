"""Who is at the station: the login panel over :class:`inspector.users.UserStore`, and the
admin's account dialog.

The login lives only in memory (it does not survive a restart). The first start of a station
with no accounts asks for the admin account instead; after that only an admin creates users.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from inspector.users import ROLES, LoginError, User, UserError, UserStore

ERROR_STYLE = "QLabel { color: #8c1d18; background: #fdecea; padding: 4px; border-radius: 4px; }"


class LoginPanel(QWidget):
    """Start-of-shift panel: name, password/PIN, Enter. Emits the authenticated :class:`User`."""

    logged_in = Signal(object)  # User

    def __init__(self, users: UserStore, station_id: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.users = users
        self.station_id = station_id
        self.title = QLabel("Start of shift")
        f = QFont()
        f.setPointSize(16)
        f.setBold(True)
        self.title.setFont(f)
        self.hint = QLabel("")
        self.hint.setWordWrap(True)
        self.name = QLineEdit()
        self.name.setPlaceholderText("user name")
        self.name.setObjectName("login_name")
        self.secret = QLineEdit()
        self.secret.setPlaceholderText("password or PIN")
        self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.secret.setObjectName("login_secret")
        self.repeat = QLineEdit()
        self.repeat.setPlaceholderText("repeat password or PIN")
        self.repeat.setEchoMode(QLineEdit.EchoMode.Password)
        self.button = QPushButton("Log in  [Enter]")
        self.error = QLabel("")
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.setWordWrap(True)
        self.error.hide()
        lay = QVBoxLayout(self)
        lay.addWidget(self.title)
        lay.addWidget(self.hint)
        lay.addWidget(self.name)
        lay.addWidget(self.secret)
        lay.addWidget(self.repeat)
        lay.addWidget(self.button)
        lay.addWidget(self.error)
        lay.addStretch(1)
        self.name.returnPressed.connect(self.secret.setFocus)
        self.secret.returnPressed.connect(self._submit)
        self.repeat.returnPressed.connect(self._submit)
        self.button.clicked.connect(self._submit)
        self.setFocusProxy(self.name)
        self.refresh()

    @property
    def first_run(self) -> bool:
        return self.users.is_empty()

    def refresh(self) -> None:
        first = self.first_run
        self.repeat.setVisible(first)
        if first:
            self.title.setText("Create the admin account")
            self.hint.setText("This station has no accounts yet. The first account is the admin, who then "
                              "creates the operator and engineer accounts (Ctrl+U).")
            self.button.setText("Create admin and log in  [Enter]")
        else:
            self.title.setText("Start of shift")
            self.hint.setText("Your decisions are recorded under your name and role until you log out.")
            self.button.setText("Log in  [Enter]")

    def show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))

    def _submit(self) -> None:
        name, secret = self.name.text().strip(), self.secret.text()
        try:
            if self.first_run:
                if secret != self.repeat.text():
                    raise UserError("the two passwords/PINs differ")
                user = self.users.create_first_admin(name, secret)
            else:
                user = self.users.authenticate(name, secret, self.station_id)
        except (UserError, LoginError) as exc:
            self.show_error(str(exc))
            self.secret.clear()
            self.repeat.clear()
            self.secret.setFocus()
            return
        self.show_error("")
        self.name.clear()
        self.secret.clear()
        self.repeat.clear()
        self.refresh()
        self.logged_in.emit(user)


class UsersDialog(QDialog):
    """An admin's account list and the form to create an account."""

    def __init__(self, users: UserStore, admin: User, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Accounts")
        self.users = users
        self.admin = admin
        self.list = QListWidget()
        self.name = QLineEdit()
        self.role = QComboBox()
        self.role.addItems(list(ROLES))
        self.secret = QLineEdit()
        self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.create_button = QPushButton("Create account")
        self.disable_button = QPushButton("Disable / enable the selected account")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Role", self.role)
        form.addRow("Password / PIN", self.secret)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Accounts of this station"))
        lay.addWidget(self.list, 1)
        lay.addWidget(self.disable_button)
        lay.addLayout(form)
        lay.addWidget(self.create_button)
        lay.addWidget(self.message)
        lay.addWidget(buttons)
        self.create_button.clicked.connect(self.create)
        self.disable_button.clicked.connect(self.toggle_selected)
        self.secret.returnPressed.connect(self.create)
        self._fill()

    def _fill(self) -> None:
        self.list.clear()
        disabled = self.users.disabled_names()
        for u in self.users.users():
            item = QListWidgetItem(f"{u.name} — {u.role}" + ("  (disabled)" if u.name in disabled else ""))
            item.setData(Qt.ItemDataRole.UserRole, u.name)
            self.list.addItem(item)

    def toggle_selected(self) -> None:
        item = self.list.currentItem()
        if item is None:
            return
        name = item.data(Qt.ItemDataRole.UserRole)
        try:
            self.users.set_disabled(self.admin, name, name not in self.users.disabled_names())
        except UserError as exc:
            self.message.setStyleSheet(ERROR_STYLE)
            self.message.setText(str(exc))
            return
        self._fill()

    def create(self) -> User | None:
        try:
            user = self.users.create(self.admin, self.name.text(), self.role.currentText(), self.secret.text())
        except UserError as exc:
            self.message.setStyleSheet(ERROR_STYLE)
            self.message.setText(str(exc))
            return None
        self.message.setStyleSheet("QLabel { color: #0d5302; }")
        self.message.setText(f"account {user.name} ({user.role}) created")
        self.name.clear()
        self.secret.clear()
        self._fill()
        return user


__all__ = ["LoginPanel", "UsersDialog"]
