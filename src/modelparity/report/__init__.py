"""Renderings of an AuditResult: report.json lives on the result itself; terminal.py draws it."""
