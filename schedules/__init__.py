"""Cron arithmetic (pure) and stored schedules."""
