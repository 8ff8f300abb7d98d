"""Pure decisions of Shipyard: no I/O, unit-tested, called by tasks and flows."""
