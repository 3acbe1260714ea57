"""smppcodecs: a pure, I/O-free SMPP 3.4 codec (PDUs, framing, text, receipts, errors)."""
