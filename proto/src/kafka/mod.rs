//! The Kafka wire protocol as the ingest consumer speaks it, without a socket: requests framed
//! with their header, responses checked against the request they answer, the version of each
//! API agreed with the broker's `ApiVersions`, a fetch's record batches cut and decoded, and the
//! SASL SCRAM exchange. The messages themselves are `kafka-protocol`'s (generated from Kafka's
//! own schemas); what is here is what a client must add around them and where broker bytes are
//! first read, so fuzzing starts here.

pub mod bounds;
pub mod records;
pub mod scram;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
pub use kafka_protocol::{messages, protocol};

/// The largest response frame accepted (a fetch is bounded by the `max_bytes` asked for, far
/// below this); a larger length prefix means the stream is not Kafka.
pub const MAX_FRAME: usize = 64 << 20;

/// What went wrong on the Kafka side of the consumer.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The bytes did not decode as the message expected.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which message or part.
        what: &'static str,
        /// The decoder's words.
        reason: String,
    },
    /// The broker answered a request it was not asked (a desynchronised connection).
    #[error("answer to request {got}, expected {want}")]
    Correlation {
        /// The request's correlation id.
        want: i32,
        /// The answer's.
        got: i32,
    },
    /// No version of `api` both sides speak.
    #[error("the broker speaks {api} versions {min}..={max}; ringcast needs {need}")]
    Version {
        /// The API's name.
        api: &'static str,
        /// The broker's lowest version (0..=-1: it has none).
        min: i16,
        /// The broker's highest version.
        max: i16,
        /// The range this client speaks.
        need: String,
    },
    /// The broker refused with a Kafka error code.
    #[error("{op}: {}", code_name(*.code))]
    Code {
        /// The request refused.
        op: &'static str,
        /// Kafka's error code.
        code: i16,
    },
    /// SASL authentication failed.
    #[error("SASL: {0}")]
    Sasl(String),
}

/// The name Kafka gives an error code (the common ones; others by number).
pub fn code_name(code: i16) -> String {
    let name = match code {
        1 => "OFFSET_OUT_OF_RANGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        25 => "UNKNOWN_MEMBER_ID",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        30 => "GROUP_AUTHORIZATION_FAILED",
        33 => "UNSUPPORTED_SASL_MECHANISM",
        35 => "UNSUPPORTED_VERSION",
        58 => "SASL_AUTHENTICATION_FAILED",
        _ => return format!("Kafka error {code}"),
    };
    name.to_string()
}

/// `Err` for a non-zero error code.
pub fn check(op: &'static str, code: i16) -> Result<(), KafkaError> {
    if code == 0 {
        Ok(())
    } else {
        Err(KafkaError::Code { op, code })
    }
}

/// A decoding or encoding failure of `what`, for `map_err` (`kafka-protocol` reports with
/// `anyhow`; only the message is kept).
fn malformed<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> KafkaError {
    move |e| KafkaError::Malformed {
        what,
        reason: e.to_string(),
    }
}

/// The versions of each API this client is written for: (lowest, highest). The lowest are
/// what Kafka 4 still serves (it dropped older ones); the highest stop before a version changed
/// a shape this code relies on (Fetch 13 and Produce 13 name topics by id only, OffsetFetch 8
/// batches groups, FindCoordinator 4 batches keys).
pub fn wanted(api: ApiKey) -> (i16, i16) {
    match api {
        ApiKey::ApiVersions => (0, 0),
        ApiKey::Metadata => (1, 12),
        ApiKey::Fetch => (4, 12),
        ApiKey::ListOffsets => (1, 7),
        ApiKey::OffsetCommit => (2, 8),
        ApiKey::OffsetFetch => (1, 7),
        ApiKey::FindCoordinator => (0, 3),
        ApiKey::Produce => (3, 9),
        ApiKey::SaslHandshake => (1, 1),
        ApiKey::SaslAuthenticate => (0, 2),
        _ => (0, -1),
    }
}

/// The version of each API agreed with one broker.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    /// (api key, min, max) as the broker announced them.
    broker: Vec<(i16, i16, i16)>,
}

impl Versions {
    /// From the broker's `ApiVersions` answer.
    pub fn new(r: &messages::ApiVersionsResponse) -> Result<Versions, KafkaError> {
        check("ApiVersions", r.error_code)?;
        Ok(Versions {
            broker: r
                .api_keys
                .iter()
                .map(|k| (k.api_key, k.min_version, k.max_version))
                .collect(),
        })
    }

    /// The highest version of `api` both speak.
    pub fn pick(&self, api: ApiKey) -> Result<i16, KafkaError> {
        let (lo, hi) = wanted(api);
        let name = api_name(api);
        let Some(&(_, min, max)) = self.broker.iter().find(|(k, _, _)| *k == api as i16) else {
            return Err(KafkaError::Version {
                api: name,
                min: 0,
                max: -1,
                need: format!("{lo}..={hi}"),
            });
        };
        let v = hi.min(max);
        if v < lo.max(min) {
            return Err(KafkaError::Version {
                api: name,
                min,
                max,
                need: format!("{lo}..={hi}"),
            });
        }
        Ok(v)
    }
}

fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Metadata => "Metadata",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::Produce => "Produce",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::ApiVersions => "ApiVersions",
        _ => "another API",
    }
}

/// `req` as version `version`, framed (length prefix, header) for the wire.
pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation: i32,
    client_id: &str,
) -> Result<Vec<u8>, KafkaError> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut body = BytesMut::new();
    body.put_i32(0);
    header
        .encode(&mut body, R::header_version(version))
        .map_err(malformed("request header"))?;
    req.encode(&mut body, version)
        .map_err(malformed("request"))?;
    let len = (body.len() - 4) as i32;
    body[..4].copy_from_slice(&len.to_be_bytes());
    Ok(body.to_vec())
}

/// How long the frame at the start of `buf` is, length prefix included, once its prefix is
/// there.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, KafkaError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let n = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if n < 4 || n as usize > MAX_FRAME {
        return Err(KafkaError::Malformed {
            what: "response frame",
            reason: format!("length {n}"),
        });
    }
    Ok(Some(4 + n as usize))
}

/// The answer to request `correlation` of type `R` at `version`, from one frame without its
/// length prefix.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
    correlation: i32,
) -> Result<R::Response, KafkaError> {
    let header = ResponseHeader::decode(
        &mut frame,
        <R::Response as HeaderVersion>::header_version(version),
    )
    .map_err(malformed("response header"))?;
    if header.correlation_id != correlation {
        return Err(KafkaError::Correlation {
            want: correlation,
            got: header.correlation_id,
        });
    }
    let api = ApiKey::try_from(R::KEY).map_err(|()| KafkaError::Malformed {
        what: "response",
        reason: format!("unknown API {}", R::KEY),
    })?;
    bounds::check(api, version, &frame).map_err(|reason| KafkaError::Malformed {
        what: "response",
        reason,
    })?;
    R::Response::decode(&mut frame, version).map_err(malformed("response"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};

    fn announced(keys: &[(i16, i16, i16)]) -> ApiVersionsResponse {
        let mut r = ApiVersionsResponse::default();
        for &(k, min, max) in keys {
            r.api_keys.push(
                messages::api_versions_response::ApiVersion::default()
                    .with_api_key(k)
                    .with_min_version(min)
                    .with_max_version(max),
            );
        }
        r
    }

    #[test]
    fn the_highest_common_version_is_picked_and_a_gap_is_refused() {
        let v = Versions::new(&announced(&[(1, 4, 17), (3, 0, 8), (0, 10, 13)])).unwrap();
        assert_eq!(v.pick(ApiKey::Fetch).unwrap(), 12);
        assert_eq!(v.pick(ApiKey::Metadata).unwrap(), 8);
        let e = v.pick(ApiKey::Produce).unwrap_err().to_string();
        assert!(e.contains("Produce versions 10..=13"), "{e}");
        let e = v.pick(ApiKey::OffsetCommit).unwrap_err().to_string();
        assert!(e.contains("OffsetCommit"), "{e}");
    }

    #[test]
    fn a_request_round_trips_through_its_frame() {
        let req = MetadataRequest::default().with_topics(None);
        let wire = encode_request(&req, 9, 7, "ringcast").unwrap();
        assert_eq!(frame_len(&wire).unwrap(), Some(wire.len()));
        let mut body = Bytes::from(wire[4..].to_vec());
        let h = RequestHeader::decode(&mut body, MetadataRequest::header_version(9)).unwrap();
        assert_eq!((h.request_api_key, h.correlation_id), (3, 7));
        assert!(
            MetadataRequest::decode(&mut body, 9)
                .unwrap()
                .topics
                .is_none()
        );
    }

    #[test]
    fn an_answer_to_another_request_is_refused() {
        let mut frame = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(5)
            .encode(&mut frame, 0)
            .unwrap();
        announced(&[(1, 4, 12)]).encode(&mut frame, 0).unwrap();
        let ok = decode_response::<ApiVersionsRequest>(frame.clone().freeze(), 0, 5).unwrap();
        assert_eq!(ok.api_keys.len(), 1);
        let e = decode_response::<ApiVersionsRequest>(frame.freeze(), 0, 6).unwrap_err();
        assert!(matches!(e, KafkaError::Correlation { want: 6, got: 5 }));
    }

    #[test]
    fn absurd_frame_lengths_are_refused() {
        assert!(frame_len(&[0, 0]).unwrap().is_none());
        assert!(frame_len(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(frame_len(&[0x7f, 0, 0, 0]).is_err());
        assert_eq!(frame_len(&[0, 0, 0, 4]).unwrap(), Some(8));
    }
}
