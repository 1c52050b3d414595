//! Stage 2: who pays. A client's request must carry an API key that this cluster signed, that
//! has not expired and is not revoked; its claims become the request's account. A request
//! handed over by a peer (mutual TLS) carries the account its entry node verified. Nothing runs
//! and nothing is charged for a request that fails here (`unauthenticated`).

use ganglion_client::protocol::{Account, ErrorCode, Plan, Request, WireError};

use super::admit::Admitted;
use super::{Context, Flow, Origin, Responder, fail};
use crate::credentials::api_keys::{KeyVerifier, RevokedKeys};

pub use crate::credentials::ANONYMOUS;

/// What authentication needs.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Verifies keys (`None`: this node's identity predates API keys, so it accepts none).
    pub verifier: Option<KeyVerifier>,
    /// Revoked key ids, as this node knows them.
    pub revoked: RevokedKeys,
    /// Serve keyless client requests as the free account [`ANONYMOUS`] (demos).
    pub allow_anonymous: bool,
}

/// The account a client's key (or, when allowed, the absence of one) stands for; `now` is
/// Unix seconds. The one key rule: the HTTP door's guard applies it to every route before a
/// body is read, and the QUIC door to model listings and usage as to requests.
pub fn client_account(auth: &Auth, key: Option<String>, now: u64) -> Result<Account, WireError> {
    let refused = |why: &str| Err(WireError::new(ErrorCode::Unauthenticated, why));
    let Some(key) = key else {
        if auth.allow_anonymous {
            return Ok(Account {
                name: ANONYMOUS.to_owned(),
                key_id: "-".to_owned(),
                plan: Plan::Free,
                daily_limit: None,
            });
        }
        return refused("an API key is required (`ganglion-node issue-key` makes one)");
    };
    let Some(verifier) = &auth.verifier else {
        return refused("this node cannot check API keys: its identity has no api-keys.pub");
    };
    match verifier.verify(&key, now, &auth.revoked) {
        Ok(claims) => Ok(Account {
            name: claims.account,
            key_id: claims.kid,
            plan: claims.plan,
            daily_limit: claims.daily_limit,
        }),
        Err(e) => refused(&e.to_string()),
    }
}

/// Gives the request its account, or answers `unauthenticated` (or `invalid_input`, for a peer
/// that did not say whose request it hands over).
pub async fn run(ctx: &Context, admitted: &mut Admitted<'_>, out: &mut impl Responder) -> Flow {
    match authenticate(
        &ctx.auth,
        &admitted.origin,
        &mut admitted.request,
        admitted.now,
    ) {
        Ok(()) => Flow::Next(()),
        Err(error) => {
            fail(out, error).await;
            Flow::Ended
        }
    }
}

/// Sets `request.account` from its key (client) or checks that the peer set it; the key itself
/// never travels further. `now` is Unix seconds.
pub fn authenticate(
    auth: &Auth,
    origin: &Origin,
    request: &mut Request,
    now: u64,
) -> Result<(), WireError> {
    let key = request.api_key.take().map(|k| k.0);
    match origin {
        Origin::Peer(peer) => match &request.account {
            None => Err(WireError::new(
                ErrorCode::InvalidInput,
                format!("a request handed over by `{peer}` must carry its account"),
            )),
            // The entry node may not have heard of a revocation yet; this node has.
            Some(account) if auth.revoked.contains(&account.key_id) => Err(WireError::new(
                ErrorCode::Unauthenticated,
                "API key revoked",
            )),
            Some(_) => Ok(()),
        },
        Origin::Client => {
            request.account = Some(client_account(auth, key, now)?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::api_keys::{KeyClaims, KeySigner, new_key_id};

    fn request(key: Option<String>) -> Request {
        let input = ganglion_client::protocol::Input::Embed(vec!["hi".into()]);
        Request {
            api_key: key.map(ganglion_client::protocol::ApiKey),
            ..Request::new("m", input)
        }
    }

    fn setup() -> (Auth, KeySigner) {
        let (signer, _) = KeySigner::generate().expect("generate");
        let auth = Auth {
            verifier: Some(KeyVerifier::new(signer.public_key())),
            revoked: RevokedKeys::default(),
            allow_anonymous: false,
        };
        (auth, signer)
    }

    fn claims(expires: Option<u64>) -> KeyClaims {
        KeyClaims {
            kid: new_key_id(),
            account: "acme".into(),
            plan: Plan::Paid,
            daily_limit: Some(100),
            expires,
        }
    }

    #[test]
    fn a_valid_key_becomes_the_account_and_is_not_passed_on() {
        let (auth, signer) = setup();
        let mut r = request(Some(signer.sign(&claims(None)).expect("sign")));
        r.account = Some(Account {
            name: "someone-else".into(),
            key_id: "x".into(),
            plan: Plan::Paid,
            daily_limit: None,
        });
        authenticate(&auth, &Origin::Client, &mut r, 10).expect("valid");
        let account = r.account.expect("account");
        assert_eq!((account.name.as_str(), account.plan), ("acme", Plan::Paid));
        assert!(r.api_key.is_none(), "the key never travels on");
    }

    #[test]
    fn missing_forged_expired_and_revoked_keys_are_unauthenticated() {
        let (auth, signer) = setup();
        let code = |auth: &Auth, key: Option<String>| {
            authenticate(auth, &Origin::Client, &mut request(key), 100)
                .expect_err("refused")
                .code
        };
        assert_eq!(code(&auth, None), ErrorCode::Unauthenticated);
        assert_eq!(
            code(&auth, Some("gnk1.x.y".into())),
            ErrorCode::Unauthenticated
        );
        let (other, _) = KeySigner::generate().expect("generate");
        let forged = other.sign(&claims(None)).expect("sign");
        assert_eq!(code(&auth, Some(forged)), ErrorCode::Unauthenticated);
        let expired = signer.sign(&claims(Some(50))).expect("sign");
        assert_eq!(code(&auth, Some(expired)), ErrorCode::Unauthenticated);
        let c = claims(None);
        auth.revoked.add([c.kid.clone()]);
        let revoked = signer.sign(&c).expect("sign");
        assert_eq!(code(&auth, Some(revoked)), ErrorCode::Unauthenticated);
    }

    #[test]
    fn anonymous_only_when_allowed_and_peers_must_name_the_account() {
        let (mut auth, _) = setup();
        auth.allow_anonymous = true;
        let mut r = request(None);
        authenticate(&auth, &Origin::Client, &mut r, 0).expect("anonymous");
        assert_eq!(r.account.expect("account").name, ANONYMOUS);
        let mut handed = request(None);
        let refused = authenticate(&auth, &Origin::Peer("p".into()), &mut handed, 0);
        assert_eq!(
            refused.expect_err("no account").code,
            ErrorCode::InvalidInput
        );
    }
}
