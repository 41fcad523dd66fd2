//! S3 errors: one enum of what can go wrong, and the one place each becomes
//! S3's error code and HTTP status.

/// An error answered to a client as S3's XML error document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3Error {
    #[error("The specified bucket does not exist")]
    NoSuchBucket { bucket: String },
    #[error("The specified key does not exist.")]
    NoSuchKey { key: String },
    #[error("The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.")]
    NoSuchUpload,
    #[error("The bucket you tried to delete is not empty")]
    BucketNotEmpty { bucket: String },
    #[error("Your previous request to create the named bucket succeeded and you already own it.")]
    BucketAlreadyOwnedByYou { bucket: String },
    #[error("The specified bucket is not valid.")]
    InvalidBucketName { bucket: String },
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed { condition: &'static str },
    #[error("The requested range is not satisfiable")]
    InvalidRange { size: u64 },
    #[error("The request signature we calculated does not match the signature you provided. Check your key and signing method.")]
    SignatureDoesNotMatch { string_to_sign: String, canonical_request: String },
    #[error("The AWS Access Key Id you provided does not exist in our records.")]
    InvalidAccessKeyId { access_key: String },
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    AuthorizationHeaderMalformed(String),
    #[error("The difference between the request time and the current time is too large.")]
    RequestTimeTooSkewed,
    #[error("The Content-MD5 you specified did not match what we received.")]
    BadDigest,
    #[error("The {0} you specified did not match the calculated checksum.")]
    BadChecksum(&'static str),
    #[error("{0}")]
    InvalidDigest(String),
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
    #[error("Your proposed upload exceeds the maximum allowed size")]
    EntityTooLarge,
    #[error("Your proposed upload is smaller than the minimum allowed size")]
    EntityTooSmall,
    #[error("One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.")]
    InvalidPart,
    #[error("The list of parts was not in ascending order. Parts must be ordered by part number.")]
    InvalidPartOrder,
    #[error("The XML you provided was not well-formed or did not validate against our published schema")]
    MalformedXml,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("The specified method is not allowed against this resource.")]
    MethodNotAllowed,
    #[error("A header you provided implies functionality that is not implemented: {0}")]
    NotImplemented(String),
    #[error("We encountered an internal error. Please try again.")]
    InternalError(String),
    #[error("Please reduce your request rate.")]
    SlowDown,
    #[error("You did not provide the number of bytes specified by the Content-Length HTTP header.")]
    IncompleteBody,
    #[error("Your key is too long")]
    KeyTooLong,
    #[error("The specified continuation token or marker is not valid")]
    InvalidToken,
}

impl S3Error {
    /// S3's error code, the `<Code>` of the error document.
    pub fn code(&self) -> &'static str {
        match self {
            S3Error::NoSuchBucket { .. } => "NoSuchBucket",
            S3Error::NoSuchKey { .. } => "NoSuchKey",
            S3Error::NoSuchUpload => "NoSuchUpload",
            S3Error::BucketNotEmpty { .. } => "BucketNotEmpty",
            S3Error::BucketAlreadyOwnedByYou { .. } => "BucketAlreadyOwnedByYou",
            S3Error::InvalidBucketName { .. } => "InvalidBucketName",
            S3Error::PreconditionFailed { .. } => "PreconditionFailed",
            S3Error::InvalidRange { .. } => "InvalidRange",
            S3Error::SignatureDoesNotMatch { .. } => "SignatureDoesNotMatch",
            S3Error::InvalidAccessKeyId { .. } => "InvalidAccessKeyId",
            S3Error::AccessDenied(_) => "AccessDenied",
            S3Error::AuthorizationHeaderMalformed(_) => "AuthorizationHeaderMalformed",
            S3Error::RequestTimeTooSkewed => "RequestTimeTooSkewed",
            S3Error::BadDigest | S3Error::BadChecksum(_) => "BadDigest",
            S3Error::InvalidDigest(_) => "InvalidDigest",
            S3Error::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
            S3Error::EntityTooLarge => "EntityTooLarge",
            S3Error::EntityTooSmall => "EntityTooSmall",
            S3Error::InvalidPart => "InvalidPart",
            S3Error::InvalidPartOrder => "InvalidPartOrder",
            S3Error::MalformedXml => "MalformedXML",
            S3Error::InvalidArgument(_) => "InvalidArgument",
            S3Error::InvalidRequest(_) => "InvalidRequest",
            S3Error::MethodNotAllowed => "MethodNotAllowed",
            S3Error::NotImplemented(_) => "NotImplemented",
            S3Error::InternalError(_) => "InternalError",
            S3Error::SlowDown => "SlowDown",
            S3Error::IncompleteBody => "IncompleteBody",
            S3Error::KeyTooLong => "KeyTooLongError",
            S3Error::InvalidToken => "InvalidArgument",
        }
    }

    /// The HTTP status S3 answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            S3Error::NoSuchBucket { .. } | S3Error::NoSuchKey { .. } | S3Error::NoSuchUpload => 404,
            S3Error::BucketNotEmpty { .. } | S3Error::BucketAlreadyOwnedByYou { .. } => 409,
            S3Error::PreconditionFailed { .. } => 412,
            S3Error::InvalidRange { .. } => 416,
            S3Error::SignatureDoesNotMatch { .. }
            | S3Error::InvalidAccessKeyId { .. }
            | S3Error::AccessDenied(_)
            | S3Error::RequestTimeTooSkewed => 403,
            S3Error::MethodNotAllowed => 405,
            S3Error::NotImplemented(_) => 501,
            S3Error::InternalError(_) => 500,
            S3Error::SlowDown => 503,
            _ => 400,
        }
    }

    /// Extra elements of the error document that help a client (and a
    /// person) see what was refused.
    pub fn details(&self) -> Vec<(&'static str, String)> {
        match self {
            S3Error::NoSuchBucket { bucket }
            | S3Error::BucketNotEmpty { bucket }
            | S3Error::BucketAlreadyOwnedByYou { bucket }
            | S3Error::InvalidBucketName { bucket } => vec![("BucketName", bucket.clone())],
            S3Error::NoSuchKey { key } => vec![("Key", key.clone())],
            S3Error::PreconditionFailed { condition } => vec![("Condition", (*condition).to_string())],
            S3Error::InvalidRange { size } => vec![("ActualObjectSize", size.to_string())],
            S3Error::SignatureDoesNotMatch { string_to_sign, canonical_request } => {
                vec![("StringToSign", string_to_sign.clone()), ("CanonicalRequest", canonical_request.clone())]
            }
            S3Error::InvalidAccessKeyId { access_key } => vec![("AWSAccessKeyId", access_key.clone())],
            _ => Vec::new(),
        }
    }
}
