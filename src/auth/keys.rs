//! Keys: verifying tokens against a JWKS file, minting tokens from a PKCS#8
//! signing key, and generating a development key pair with its JWKS.
//!
//! Verification accepts ES256 (P-256), EdDSA (Ed25519) and RS256 keys. A
//! symmetric (`oct`) key in the JWKS is refused at load: with it anyone who
//! can read the JWKS could mint tokens.

use std::{
    collections::HashMap,
    path::Path,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm},
};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{AuthSetupError, Caller, Denied};
use crate::domain::CustomerId;

/// One verification key from the JWKS.
struct VerifyingKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Tokens whose signature and claims were checked, kept so that a client
/// reusing its token costs a lookup, not a signature check; at most this many
/// (the set is emptied when full).
const MAX_VERIFIED: usize = 4_096;

/// Checks bearer tokens: signature, `exp`, `nbf`, `iss`, `aud`.
pub struct Verifier {
    keys: Vec<VerifyingKey>,
    issuer: String,
    audience: String,
    leeway: Duration,
    /// Verified tokens with their caller and `exp`: the same bytes verify the
    /// same way until they expire, which is checked again on every use.
    verified: Mutex<HashMap<String, (Caller, u64)>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The claims this service reads; `exp`, `nbf`, `iss` and `aud` are checked
/// by the validation.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    customer_id: Option<String>,
    iss: String,
    aud: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

impl Verifier {
    /// Loads the keys of the JWKS file at `path`.
    pub fn from_jwks_file(
        path: &Path,
        issuer: &str,
        audience: &str,
        leeway: Duration,
    ) -> Result<Self, AuthSetupError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthSetupError::read(path, e))?;
        Self::from_jwks(&text, issuer, audience, leeway).map_err(|reason| AuthSetupError::Jwks {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Loads the keys of a JWKS document.
    pub fn from_jwks(
        jwks: &str,
        issuer: &str,
        audience: &str,
        leeway: Duration,
    ) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_str(jwks).map_err(|e| format!("not a JWKS: {e}"))?;
        let keys = set
            .keys
            .iter()
            .map(verifying_key)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("it holds no key".into());
        }
        Ok(Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The caller a bearer token stands for, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Caller, Denied> {
        self.verify_at(token, unix_now())
    }

    /// `verify` at `now` (seconds since the epoch) for a token verified
    /// before; a new token is checked against the real clock.
    fn verify_at(&self, token: &str, now: u64) -> Result<Caller, Denied> {
        let known = self
            .verified
            .lock()
            .expect("not poisoned")
            .get(token)
            .cloned();
        if let Some((caller, exp)) = known {
            return if exp.saturating_add(self.leeway.as_secs()) >= now {
                Ok(caller)
            } else {
                Err(Denied::Unauthenticated("invalid token: expired".into()))
            };
        }
        let (caller, exp) = self.check(token)?;
        let mut verified = self.verified.lock().expect("not poisoned");
        if verified.len() >= MAX_VERIFIED {
            verified.clear();
        }
        verified.insert(token.to_owned(), (caller.clone(), exp));
        Ok(caller)
    }

    /// Checks a token's signature and claims; its caller and `exp`.
    fn check(&self, token: &str) -> Result<(Caller, u64), Denied> {
        let unauthenticated = |why: &str| Denied::Unauthenticated(format!("invalid token: {why}"));
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| unauthenticated("malformed"))?;
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            .peekable();
        if candidates.peek().is_none() {
            return Err(unauthenticated("signed by an unknown key"));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway.as_secs();
        let mut last = unauthenticated("bad signature");
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    let exp = data.claims.exp;
                    return caller(data.claims).map(|c| (c, exp));
                }
                Err(error) => {
                    last = unauthenticated(match error.kind() {
                        ErrorKind::ExpiredSignature => "expired",
                        ErrorKind::ImmatureSignature => "not valid yet (nbf)",
                        ErrorKind::InvalidIssuer => "wrong issuer",
                        ErrorKind::InvalidAudience => "wrong audience",
                        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
                        ErrorKind::InvalidSignature => "bad signature",
                        _ => "malformed",
                    });
                    if !matches!(error.kind(), ErrorKind::InvalidSignature) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn caller(claims: Claims) -> Result<Caller, Denied> {
    let customer_id = claims
        .customer_id
        .map(|c| {
            CustomerId::parse(&c).map_err(|_| {
                Denied::Unauthenticated("invalid token: the customer_id claim is not valid".into())
            })
        })
        .transpose()?;
    Ok(Caller::new(
        claims.sub,
        claims.scope.split_ascii_whitespace(),
        customer_id,
    ))
}

/// The verification key and algorithm of one JWK.
fn verifying_key(jwk: &Jwk) -> Result<VerifyingKey, String> {
    let kid = jwk.common.key_id.clone();
    let name = kid.as_deref().unwrap_or("(no kid)");
    let algorithm = match (&jwk.algorithm, &jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
            if p.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::OctetKeyPair(p), None | Some(KeyAlgorithm::EdDSA))
            if p.curve == EllipticCurve::Ed25519 =>
        {
            Algorithm::EdDSA
        }
        (AlgorithmParameters::OctetKey(_), _) => {
            return Err(format!(
                "key {name} is symmetric (kty oct); only ES256, EdDSA and RS256 public keys are accepted"
            ));
        }
        _ => {
            return Err(format!(
                "key {name} is not an ES256 (P-256), EdDSA (Ed25519) or RS256 key"
            ));
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {name}: {e}"))?;
    Ok(VerifyingKey {
        kid,
        algorithm,
        key,
    })
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `sub`.
    pub subject: String,
    /// Scopes, joined into the `scope` claim.
    pub scopes: Vec<String>,
    /// Confines the token to one customer.
    pub customer_id: Option<String>,
    /// How long the token is valid from now.
    pub ttl: Duration,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
}

/// A minted token and when it expires.
#[derive(Debug, Clone)]
pub struct Minted {
    /// The compact JWT.
    pub token: String,
    /// Its `exp`, in seconds since the epoch.
    pub expires_at: u64,
}

/// A PKCS#8 signing key: Ed25519 (EdDSA) or P-256 (ES256).
enum SigningKey {
    Ed25519(Vec<u8>),
    P256(Vec<u8>),
}

impl SigningKey {
    fn from_pem(pem_text: &[u8]) -> Result<Self, AuthSetupError> {
        let block = pem::parse(pem_text)
            .map_err(|e| AuthSetupError::SigningKey(format!("not a PEM file: {e}")))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(AuthSetupError::SigningKey(format!(
                "a PKCS#8 \"PRIVATE KEY\" is needed, found \"{}\"",
                block.tag()
            )));
        }
        let der = block.into_contents();
        if Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).is_ok() {
            return Ok(Self::Ed25519(der));
        }
        if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
            .is_ok()
        {
            return Ok(Self::P256(der));
        }
        Err(AuthSetupError::SigningKey(
            "only Ed25519 and P-256 PKCS#8 keys can sign".into(),
        ))
    }

    /// The public JWK (with `kid` = its RFC 7638 thumbprint, `alg` and `use`).
    fn public_jwk(&self) -> serde_json::Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        // Members in the lexicographic order RFC 7638 prescribes for the thumbprint.
        let (mut jwk, alg) = match self {
            Self::Ed25519(der) => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).expect("checked");
                (
                    json!({"crv": "Ed25519", "kty": "OKP", "x": b64(pair.public_key().as_ref())}),
                    "EdDSA",
                )
            }
            Self::P256(der) => {
                let pair = EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &SystemRandom::new(),
                )
                .expect("checked");
                // Uncompressed point: 0x04, x (32 bytes), y (32 bytes).
                let point = pair.public_key().as_ref();
                (
                    json!({"crv": "P-256", "kty": "EC", "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
                    "ES256",
                )
            }
        };
        let thumbprint = ring::digest::digest(&ring::digest::SHA256, jwk.to_string().as_bytes());
        jwk["kid"] = b64(thumbprint.as_ref()).into();
        jwk["alg"] = alg.into();
        jwk["use"] = "sig".into();
        jwk
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed25519(_) => Algorithm::EdDSA,
            Self::P256(_) => Algorithm::ES256,
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        match self {
            Self::Ed25519(der) => EncodingKey::from_ed_der(der),
            Self::P256(der) => EncodingKey::from_ec_der(der),
        }
    }
}

/// Signs a token for `request` with the PKCS#8 PEM key `signing_key_pem`.
pub fn mint(
    signing_key_pem: &[u8],
    request: &TokenRequest,
    now: SystemTime,
) -> Result<Minted, AuthSetupError> {
    let key = SigningKey::from_pem(signing_key_pem)?;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let expires_at = now.saturating_add(request.ttl.as_secs());
    let claims = Claims {
        sub: request.subject.clone(),
        scope: request.scopes.join(" "),
        customer_id: request.customer_id.clone(),
        iss: request.issuer.clone(),
        aud: request.audience.clone(),
        exp: expires_at,
        nbf: Some(now),
        iat: Some(now),
    };
    let mut header = Header::new(key.algorithm());
    header.kid = key.public_jwk()["kid"].as_str().map(str::to_owned);
    let token = jsonwebtoken::encode(&header, &claims, &key.encoding_key())
        .map_err(|e| AuthSetupError::SigningKey(e.to_string()))?;
    Ok(Minted { token, expires_at })
}

/// Files written by [`generate_keys`].
#[derive(Debug, Clone)]
pub struct GeneratedKeys {
    /// The Ed25519 private key, PKCS#8 PEM, readable by its owner only.
    pub signing_key: std::path::PathBuf,
    /// The JWKS holding its public key.
    pub jwks: std::path::PathBuf,
    /// The key's id (`kid`).
    pub kid: String,
}

/// Writes a new Ed25519 signing key (`signing-key.pem`) and its JWKS
/// (`jwks.json`) into `dir`.
pub fn generate_keys(dir: &Path) -> Result<GeneratedKeys, AuthSetupError> {
    let write_error = |path: &Path, source| AuthSetupError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| AuthSetupError::SigningKey("key generation failed".into()))?;
    let key = SigningKey::Ed25519(der.as_ref().to_vec());
    let jwk = key.public_jwk();
    let kid = jwk["kid"].as_str().unwrap_or_default().to_owned();
    let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
    let signing_key = dir.join("signing-key.pem");
    let jwks = dir.join("jwks.json");
    write_private(&signing_key, pem_text.as_bytes()).map_err(|e| write_error(&signing_key, e))?;
    let set = serde_json::to_string_pretty(&json!({ "keys": [jwk] })).expect("json");
    std::fs::write(&jwks, set + "\n").map_err(|e| write_error(&jwks, e))?;
    Ok(GeneratedKeys {
        signing_key,
        jwks,
        kid,
    })
}

/// Writes `bytes` to a new file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// Parses a duration such as `90s`, `15m`, `24h` or `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 90s, 15m, 24h or 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("'{text}': the unit must be s, m, h or d")),
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("'{text}' is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(scopes: &[&str], customer: Option<&str>) -> TokenRequest {
        TokenRequest {
            subject: "alice".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            customer_id: customer.map(str::to_owned),
            ttl: Duration::from_secs(60),
            issuer: "orders".into(),
            audience: "orders".into(),
        }
    }

    fn keys() -> (Vec<u8>, String, tempdir::Dir) {
        let dir = tempdir::Dir::new();
        let generated = generate_keys(dir.path()).unwrap();
        let pem = std::fs::read(&generated.signing_key).unwrap();
        let jwks = std::fs::read_to_string(&generated.jwks).unwrap();
        (pem, jwks, dir)
    }

    fn verifier(jwks: &str) -> Verifier {
        Verifier::from_jwks(jwks, "orders", "orders", Duration::from_secs(5)).unwrap()
    }

    /// A scratch directory removed on drop (no extra crate for it).
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let path =
                    std::env::temp_dir().join(format!("orders-auth-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn a_minted_token_verifies_with_its_scopes_and_customer() {
        let (pem, jwks, _dir) = keys();
        let minted = mint(
            &pem,
            &request(&["orders:read", "orders:write"], Some("c-1")),
            SystemTime::now(),
        )
        .unwrap();
        let caller = verifier(&jwks).verify(&minted.token).unwrap();
        assert_eq!(caller.subject, "alice");
        assert!(caller.has_scope("orders:read") && caller.has_scope("orders:write"));
        assert!(!caller.has_scope("orders"));
        assert_eq!(caller.customer_id.unwrap().as_str(), "c-1");
    }

    #[test]
    fn refuses_a_token_signed_by_another_key() {
        let (_, jwks, _dir) = keys();
        let (other, _, _other_dir) = keys();
        let minted = mint(&other, &request(&["orders:read"], None), SystemTime::now()).unwrap();
        assert!(matches!(
            verifier(&jwks).verify(&minted.token),
            Err(Denied::Unauthenticated(_))
        ));
    }

    #[test]
    fn refuses_expired_tokens_beyond_the_leeway() {
        let (pem, jwks, _dir) = keys();
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3_600);
        let minted = mint(&pem, &request(&["orders:read"], None), an_hour_ago).unwrap();
        assert_eq!(
            verifier(&jwks).verify(&minted.token),
            Err(Denied::Unauthenticated("invalid token: expired".into()))
        );
    }

    #[test]
    fn refuses_another_audience_and_issuer() {
        let (pem, jwks, _dir) = keys();
        let mut wrong = request(&["orders:read"], None);
        wrong.audience = "billing".into();
        let minted = mint(&pem, &wrong, SystemTime::now()).unwrap();
        assert_eq!(
            verifier(&jwks).verify(&minted.token),
            Err(Denied::Unauthenticated(
                "invalid token: wrong audience".into()
            ))
        );
        let mut wrong = request(&["orders:read"], None);
        wrong.issuer = "elsewhere".into();
        let minted = mint(&pem, &wrong, SystemTime::now()).unwrap();
        assert_eq!(
            verifier(&jwks).verify(&minted.token),
            Err(Denied::Unauthenticated(
                "invalid token: wrong issuer".into()
            ))
        );
    }

    #[test]
    fn refuses_garbage_and_symmetric_keys() {
        let (_, jwks, _dir) = keys();
        assert!(verifier(&jwks).verify("not.a.token").is_err());
        let oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"k"}]}"#;
        assert!(
            Verifier::from_jwks(oct, "orders", "orders", Duration::ZERO)
                .unwrap_err()
                .contains("symmetric")
        );
    }

    #[test]
    fn verifies_es256_tokens() {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
        let jwk = SigningKey::from_pem(pem_text.as_bytes())
            .unwrap()
            .public_jwk();
        let jwks = json!({ "keys": [jwk] }).to_string();
        let minted = mint(
            pem_text.as_bytes(),
            &request(&["orders:write"], None),
            SystemTime::now(),
        )
        .unwrap();
        assert!(
            verifier(&jwks)
                .verify(&minted.token)
                .unwrap()
                .has_scope("orders:write")
        );
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let (pem, jwks, _dir) = keys();
        let verifier = verifier(&jwks);
        let minted = mint(&pem, &request(&["orders:read"], None), SystemTime::now()).unwrap();
        let caller = verifier.verify(&minted.token).unwrap();
        // The second use is a lookup, and answers the same.
        assert_eq!(verifier.verify(&minted.token).unwrap(), caller);
        assert_eq!(verifier.verified.lock().unwrap().len(), 1);
        // Past `exp` and the leeway it is refused although remembered.
        assert_eq!(
            verifier.verify_at(&minted.token, minted.expires_at + 5),
            Ok(caller)
        );
        assert_eq!(
            verifier.verify_at(&minted.token, minted.expires_at + 6),
            Err(Denied::Unauthenticated("invalid token: expired".into()))
        );
    }

    #[test]
    fn a_refused_token_is_not_remembered() {
        let (_, jwks, _dir) = keys();
        let (other, _, _other_dir) = keys();
        let verifier = verifier(&jwks);
        let forged = mint(&other, &request(&["orders:read"], None), SystemTime::now()).unwrap();
        assert!(verifier.verify(&forged.token).is_err());
        assert!(verifier.verify(&forged.token).is_err());
        assert!(verifier.verified.lock().unwrap().is_empty());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
    }
}
