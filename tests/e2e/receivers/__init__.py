"""An app that connects a receiver to orders.signals.order_completed, as a
project's own app would, for the end-to-end test of the signals
(tests/e2e/test_signals_e2e.py): started with DJANGO_SETTINGS_MODULE=
tests.e2e.receivers.settings, every process of the stack connects it."""
