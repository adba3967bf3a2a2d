// Placeholder: replaced by the TLS global setup (self-signed CA for the test HTTPS file host).
export default function setup(): void {}
