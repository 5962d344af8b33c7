"""Measuring mattes: metrics (MAD, MSE, Grad, Conn, dtSSD, IoU), synthetic composites with exact alpha, and
`bgvid eval`."""
