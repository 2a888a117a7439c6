"""The messaging pipeline: intake, channel choice, routing, prioritized sending,
delivery reports and tracked links (docs/messaging.md)."""
