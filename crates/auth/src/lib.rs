//! berth-auth: AWS Signature Version 4 verification and signing.
