//! The client side of SASL SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677), as Kafka runs
//! it inside `SaslAuthenticate`: three messages, no I/O. The nonce comes from the caller so the
//! exchange is the same every time under test.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

use super::KafkaError;

/// Iteration counts above this are refused: a server asking for more would make each
/// reconnect burn seconds of CPU.
const MAX_ITERATIONS: u32 = 1_000_000;

/// Which hash the mechanism is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl Mechanism {
    /// The SASL name Kafka's `SaslHandshake` takes.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha512 => {
                let mut m = Hmac::<Sha512>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// RFC 5802's `Hi`: PBKDF2 with this HMAC and one block.
    fn salted(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut first = salt.to_vec();
        first.extend_from_slice(&1u32.to_be_bytes());
        let mut u = self.hmac(password, &first);
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &u);
            out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
        }
        out
    }
}

/// One exchange, between the client's first message and the server's last.
pub struct Scram {
    mechanism: Mechanism,
    password: String,
    nonce: String,
    first_bare: String,
    /// The server's signature to expect, once the final message is written.
    expect: Option<Vec<u8>>,
}

fn escape(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

fn sasl(reason: impl Into<String>) -> KafkaError {
    KafkaError::Sasl(reason.into())
}

impl Scram {
    /// Starts an exchange; returns it and the client-first message.
    pub fn start(
        mechanism: Mechanism,
        user: &str,
        password: &str,
        nonce: &str,
    ) -> (Scram, Vec<u8>) {
        let first_bare = format!("n={},r={nonce}", escape(user));
        let msg = format!("n,,{first_bare}").into_bytes();
        let s = Scram {
            mechanism,
            password: password.to_string(),
            nonce: nonce.to_string(),
            first_bare,
            expect: None,
        };
        (s, msg)
    }

    /// The client-final message, from the server-first one.
    pub fn answer(&mut self, server_first: &[u8]) -> Result<Vec<u8>, KafkaError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| sasl("server-first is not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                Some(("e", v)) => return Err(sasl(format!("server: {v}"))),
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| sasl("server-first without r="))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(sasl("server nonce does not extend ours"));
        }
        let salt = B64
            .decode(salt.ok_or_else(|| sasl("server-first without s="))?)
            .map_err(|_| sasl("salt is not base64"))?;
        let iterations = iterations.ok_or_else(|| sasl("server-first without a valid i="))?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(sasl(format!("iteration count {iterations}")));
        }
        let m = self.mechanism;
        let salted = m.salted(self.password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{text},{without_proof}", self.first_bare);
        let signature = m.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = m.hmac(&salted, b"Server Key");
        self.expect = Some(m.hmac(&server_key, auth.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proved it knows the password too.
    pub fn finish(&self, server_final: &[u8]) -> Result<(), KafkaError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| sasl("server-final is not UTF-8"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(sasl(format!("server: {e}")));
        }
        let sig = text
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .ok_or_else(|| sasl("server-final without v="))?;
        let sig = B64
            .decode(sig)
            .map_err(|_| sasl("server signature is not base64"))?;
        match &self.expect {
            Some(want) if *want == sig => Ok(()),
            Some(_) => Err(sasl("the server's signature does not match")),
            None => Err(sasl("server-final before server-first")),
        }
    }
}

/// SASL PLAIN's one message.
pub fn plain(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_example() {
        let (mut s, first) =
            Scram::start(Mechanism::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let last = s.answer(server_first).unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.finish(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(s.finish(b"v=AAAA").is_err());
        assert!(s.finish(b"e=invalid-proof").is_err());
    }

    #[test]
    fn a_server_that_does_not_extend_the_nonce_or_asks_too_much_is_refused() {
        let (mut s, _) = Scram::start(Mechanism::Sha512, "u,=", "p", "abc");
        assert!(s.answer(b"r=xyz1,s=AAAA,i=4096").is_err());
        assert!(s.answer(b"r=abc,s=AAAA,i=4096").is_err());
        assert!(s.answer(b"r=abcd,s=AAAA,i=99999999").is_err());
        assert!(s.answer(b"r=abcd,s=!!,i=10").is_err());
        assert!(s.answer(b"\xff").is_err());
        assert!(s.answer(b"r=abcd,s=AAAA,i=10").is_ok());
        assert_eq!(escape("u,="), "u=2C=3D");
    }
}
