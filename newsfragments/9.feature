Security: configurable and counted input limits, fuzz tests, client-certificate checks,
verified outgoing TLS that fails closed, digest authentication for the built-in registrar
(`[auth]`, SHA-256 and MD5), and pike-like flood protection (`[pike]`).
