"""What a study leaves behind and shows: reading studies back, reports, exports, W&B tracking
and the console's lines."""
