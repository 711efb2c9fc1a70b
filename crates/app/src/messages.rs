//! Messages for people in Japanese and English (日本語 / English), gettext-style: every error is
//! written once, in English, where it arises; [`localize`] renders it in the reader's language
//! from one catalogue of templates, for every surface that shows errors to staff (the command line
//! today, the console next). A message with no entry is shown as written, in English (gettext's
//! fallback); `catalogue_covers_every_error_written_in_the_code` keeps that from happening
//! silently.
//!
//! A template's `{}` matches any text. In the Japanese template `{1}`, `{2}`… put those matches
//! back in any order (Japanese word order differs), and `{1:t}` puts a match back translated
//! (for words such as `read` in "cannot read `…`").

use std::borrow::Cow;

/// A language for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// 日本語.
    Ja,
    /// English.
    En,
}

impl Lang {
    /// From a language tag or POSIX locale name (`ja`, `ja-JP`, `ja_JP.UTF-8`, `en_US.UTF-8`, `C`).
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let tag = tag.trim();
        if tag.is_empty() {
            return None;
        }
        let lower = tag.to_ascii_lowercase();
        Some(if lower == "ja" || lower.starts_with("ja_") || lower.starts_with("ja-") || lower.starts_with("ja.") {
            Lang::Ja
        } else {
            Lang::En
        })
    }

    /// The language of the command line: `MAMORI_LANG`, else the POSIX locale (`LC_ALL`,
    /// `LC_MESSAGES`, `LANG`, first one set). With none set, English (the `C` locale).
    pub fn from_env() -> Lang {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Lang::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Lang {
        ["MAMORI_LANG", "LC_ALL", "LC_MESSAGES", "LANG"]
            .iter()
            .find_map(|n| var(n).and_then(|v| Lang::from_tag(&v)))
            .unwrap_or(Lang::En)
    }
}

/// English template → Japanese template. The longest matching template wins.
const JA: &[(&str, &str)] = &[
    // Words put back by `{n:t}`.
    ("read", "読み込み"),
    ("create", "作成"),
    ("write", "書き込み"),
    ("restrict", "アクセス権の制限"),
    ("runtime", "実行環境の準備"),
    ("server", "サーバーの実行"),
    ("collector", "収集先"),
    ("witness", "監査証跡の立会人（witness）"),
    // Messages composed of others: each part translated where the catalogue knows it.
    ("`{}`: {}", "`{1}`: {2:t}"),
    ("{}: {}", "{1:t}: {2:t}"),
    // The command line.
    ("cannot open the data directory", "データディレクトリを開けません"),
    ("cannot open the database read-only", "データベースを読み取り専用で開けません"),
    ("cannot open the store read-only", "ストアを読み取り専用で開けません"),
    (
        "cannot open the audit trail's file (audit.db) read-only",
        "監査証跡のファイル（audit.db）を読み取り専用で開けません",
    ),
    ("test table: it has no [[case]]", "テスト表に [[case]] がありません"),
    ("not a baseline note", "ベースラインの署名付きノートではありません"),
    ("approving a baseline must say why", "ベースラインの承認には理由が必要です"),
    ("reverting must say why", "差し戻しには理由が必要です"),
    ("integrity.response `{}` is not one of {}", "integrity.response の `{1}` は次のいずれでもありません: {2}"),
    ("accepting must say why", "受け入れには理由が必要です"),
    ("`{}` is not KIND/KEY (e.g. policies/active)", "`{1}` は 種類/キー の形式ではありません (例: policies/active)"),
    ("`{}` is not a configuration kind", "`{1}` は設定の種類ではありません"),
    ("`{}` was not changed around the configuration path", "`{1}` は設定変更の経路の外で変更されていません"),
    // The two-person rule (C3).
    ("refusing a request must say why", "却下するには理由を入力してください"),
    ("to take back your own request, withdraw it", "ご自身の依頼は却下ではなく取り下げてください"),
    ("no change request `{}`", "変更依頼 `{1}` はありません"),
    (
        "change request {} was altered outside Mamori (its seal does not match); it cannot be decided",
        "変更依頼 {1} は Mamori の外で書き換えられています（封印が一致しません）。決定できません",
    ),
    ("change request {} is already {}", "変更依頼 {1} はすでに {2} です"),
    ("change request {} has expired", "変更依頼 {1} は期限切れです"),
    (
        "change request {} is not the change you confirmed (its sha256 is {}); look at it again",
        "変更依頼 {1} は確認された内容と異なります（sha256 は {2}）。もう一度内容を確認してください",
    ),
    (
        "change request {} was not applied: the entry changed after it was requested ({}); request it again",
        "変更依頼 {1} は反映されませんでした。依頼後に対象が変更されています（{2}）。改めて依頼してください",
    ),
    (
        "a request made at the command line must be approved by a person signed in to the console",
        "コマンドラインで行われた依頼は、コンソールにサインインした担当者が承認してください",
    ),
    ("change request {} is not yours to withdraw", "変更依頼 {1} はご自身の依頼ではないため取り下げられません"),
    ("change request {} cannot be read: {}", "変更依頼 {1} を読み込めません: {2}"),
    ("could not number the request; retry", "依頼に番号を付けられませんでした。再試行してください"),
    (
        "change request {} awaits a second person's approval (sha256 {}): {}; nothing changes until another person approves it",
        "変更依頼 {1} は別の担当者の承認待ちです（sha256 {2}）: {3}。承認されるまで何も変更されません",
    ),
    ("account `{}` was changed meanwhile", "アカウント `{1}` はその間に変更されました"),
    // Held settings.
    ("cannot record held settings: {}", "保留した設定を記録できません: {1}"),
    ("cannot hold settings: {}", "設定を保留できません: {1}"),
    // Alert delivery.
    ("no connection", "接続がありません"),
    (
        "integrity.alert_syslog `{}` must be host:port, e.g. siem.example.local:6514",
        "integrity.alert_syslog `{1}` は host:port の形式にしてください（例: siem.example.local:6514）",
    ),
    (
        "integrity.alert_syslog needs alert_syslog_ca (the CA file that signs the collector's certificate)",
        "integrity.alert_syslog には alert_syslog_ca（収集サーバーの証明書に署名した CA のファイル）が必要です",
    ),
    (
        "integrity.alert_syslog_ca is set but alert_syslog is not",
        "integrity.alert_syslog_ca が設定されていますが alert_syslog がありません",
    ),
    // External settings (C4).
    ("`{}` is larger than 64 MiB", "`{1}` は 64 MiB を超えています"),
    ("the settings are not JSON: {}", "設定が JSON ではありません: {1}"),
    ("the settings must be a JSON object or array", "設定は JSON のオブジェクトまたは配列にしてください"),
    ("registering external settings must say why", "外部システムの設定を登録するには理由を入力してください"),
    ("no application `{}` is registered", "アプリケーション `{1}` は登録されていません"),
    ("no external settings `{}`", "外部システムの設定 `{1}` はありません"),
    ("external settings `{}` do not verify: {}", "外部システムの設定 `{1}` の署名を検証できません: {2}"),
    (
        "external settings `{}` do not verify: the hash is not the signed one",
        "外部システムの設定 `{1}` の署名を検証できません: ハッシュが署名されたものと異なります",
    ),
    (
        "`{}` is not an external settings name (1–64 of a–z 0–9 . _ -)",
        "`{1}` は外部システムの設定の名前として使えません（a–z 0–9 . _ - の 1〜64 文字）",
    ),
    ("unknown kind `{}`", "不明な種類 `{1}`"),
    ("cannot read `{}` for the baseline: {}", "ベースラインのために `{1}` を読めません: {2}"),
    ("the stored baseline cannot be read: {}", "保存されたベースラインを読めません: {1}"),
    ("the baseline does not verify: {}", "ベースラインの署名を検証できません: {1}"),
    ("`{}` is not a SMART resource scope", "`{1}` は SMART のリソーススコープではありません"),
    ("audit verify: {}", "監査証跡の検証: {1}"),
    ("cannot read `mamori.toml`", "`mamori.toml` を読み込めません"),
    ("cannot read the password from stdin", "標準入力からパスワードを読み込めません"),
    ("cannot read `{}`", "`{1}` を読み込めません"),
    ("cannot create `{}`", "`{1}` を作成できません"),
    ("cannot write into `{}`", "`{1}` に書き込めません"),
    ("cannot connect to `{}`", "`{1}` に接続できません"),
    ("cannot listen on `{}`", "`{1}` で待ち受けできません"),
    ("cannot {} `{}`", "`{2}` を{1:t}できません"),
    ("bad CA PEM", "CA証明書のPEMが正しくありません"),
    ("bad CA certificate", "CA証明書が正しくありません"),
    ("entry {}", "監査エントリ {1}"),
    (
        "--syslog-tls sends syslog messages; use --format syslog",
        "--syslog-tls は syslog 形式で送ります。--format syslog を指定してください",
    ),
    (
        "refusing plain HTTP on `{}`: only loopback may be served without TLS; give --tls-cert and --tls-key",
        "`{1}` では平文HTTPで待ち受けません。TLSなしで提供できるのはループバックだけです。--tls-cert と --tls-key を指定してください",
    ),
    (
        "token lifetime `{}` must be between 60 s and 24 h",
        "トークンの有効期間 `{1}` は60秒から24時間の間で指定してください",
    ),
    ("give at least one NDJSON file", "NDJSONファイルを少なくとも1つ指定してください"),
    (
        "say --confirm, or --revoke ROLE for each role to remove",
        "--confirm を指定するか、外すロールごとに --revoke ROLE を指定してください",
    ),
    // Opening a data directory (NodeError).
    (
        "--database must be a postgres:// URL (got `{}`); without it the embedded store in the data directory is used",
        "--database には postgres:// で始まるURLを指定してください（指定値 `{1}`）。指定しなければデータディレクトリ内の組み込みストアを使います",
    ),
    ("no randomness for `{}`: {}", "`{1}` のための乱数を得られません: {2}"),
    ("cannot build the search index: {}", "検索索引を構築できません: {1:t}"),
    ("cannot record the settings of `{}`: changed concurrently", "`{1}` の設定を記録できません: 同時に変更されました"),
    (
        "this node's `{}` differs from the one the store {} was set up with; copy the keys directory of the first node to every node (docs/DEPLOYMENT.md)",
        "このノードの `{1}` は、ストア {2} の設定時のものと異なります。最初のノードの keys ディレクトリをすべてのノードに複製してください（docs/DEPLOYMENT.md）",
    ),
    ("`{}` is not a 32-byte hex key", "`{1}` は32バイトの16進数の鍵ではありません"),
    ("`{}` is not a 32-byte hex seed", "`{1}` は32バイトの16進数のシードではありません"),
    ("cannot integrate the audit trail: {}", "監査証跡を統合できません: {1:t}"),
    ("stored policies have no `text`", "保存されたポリシーに `text` がありません"),
    ("stored policies: {}", "保存されたポリシー: {1:t}"),
    ("shipped policies: {}", "同梱のポリシー: {1:t}"),
    ("stored class rules: {}", "保存された情報区分の規則: {1:t}"),
    (
        "store schema is version {}; this build needs {}",
        "ストアのスキーマはバージョン {1} です。このビルドには {2} が必要です",
    ),
    ("the audit writer has stopped", "監査証跡の書き込みが停止しています"),
    (
        "{} `{}` changed concurrently (now at version {}); reload and retry",
        "{1} `{2}` は同時に変更されました（現在バージョン {3}）。読み込み直して再実行してください",
    ),
    ("store busy: {}", "ストアが混雑しています: {1:t}"),
    ("store unavailable: {}", "ストアを利用できません: {1:t}"),
    ("corrupt stored value: {}", "保存された値が壊れています: {1:t}"),
    // mamori.toml.
    (
        "server.max_body_bytes `{}` must be between 1 KiB and 1 GiB",
        "server.max_body_bytes `{1}` は1KiBから1GiBの間で指定してください",
    ),
    ("retention.types: `{}` is not an R4 resource type", "retention.types: `{1}` はR4のリソース型ではありません"),
    (
        "server.public_url `{}` must start with https:// or http://",
        "server.public_url `{1}` は https:// または http:// で始めてください",
    ),
    (
        "server.cors_origins: `{}` is not an origin such as https://app.example (scheme, host and port only; no wildcard)",
        "server.cors_origins: `{1}` はオリジン（https://app.example のようにスキーム・ホスト・ポートのみ、ワイルドカード不可）ではありません",
    ),
    (
        "server.{}: `{}` is not an address or CIDR block such as 10.0.0.5/32",
        "server.{1}: `{2}` はアドレスまたは 10.0.0.5/32 のようなCIDRブロックではありません",
    ),
    (
        "store.database must be a postgres:// URL (or absent for the embedded store)",
        "store.database には postgres:// で始まるURLを指定してください（組み込みストアを使う場合は指定しません）",
    ),
    (
        "identity.password_max_age_days `{}` must be 1–60 (the Q&A: at least every two months)",
        "identity.password_max_age_days `{1}` は1〜60で指定してください（Q&A: 少なくとも2か月ごと）",
    ),
    (
        "identity.lockout_threshold must be 3–100 and lockout_secs 60–86400",
        "identity.lockout_threshold は3〜100、lockout_secs は60〜86400で指定してください",
    ),
    (
        "identity.session_idle_secs must be 60–3600 and session_absolute_secs 600–86400 (and not shorter than idle)",
        "identity.session_idle_secs は60〜3600、session_absolute_secs は600〜86400（idle より短くしない）で指定してください",
    ),
    ("settings value is not an object", "設定値がオブジェクトではありません"),
    // Applications (clients).
    ("redirect URI `{}`: {}", "リダイレクトURI `{1}`: {2}"),
    ("JWK Set: {}", "JWK Set（公開鍵の集合）: {1:t}"),
    (
        "client id `{}` must be 1–64 characters of A–Z a–z 0–9 - _ .",
        "クライアントID `{1}` は A–Z a–z 0–9 - _ . の1〜64文字で指定してください",
    ),
    ("class `{}` is not an information class ({})", "`{1}` は情報区分ではありません（{2}）"),
    (
        "allowed address `{}` is not an address or CIDR block such as 10.1.0.0/16",
        "許可アドレス `{1}` はアドレスまたは 10.1.0.0/16 のようなCIDRブロックではありません",
    ),
    ("the token lifetime must be between 60 s and 24 h", "トークンの有効期間は60秒から24時間の間で指定してください"),
    (
        "patient/ and user/ scopes are granted by a person: give a redirect URI",
        "patient/ と user/ のスコープは利用者が許可するものです。リダイレクトURIを指定してください",
    ),
    (
        "openid, fhirUser, launch/patient and offline_access need a person: give a redirect URI",
        "openid、fhirUser、launch/patient、offline_access には利用者が必要です。リダイレクトURIを指定してください",
    ),
    ("client `{}` already exists", "クライアント `{1}` は既に存在します"),
    ("no client `{}`", "クライアント `{1}` はありません"),
    ("client `{}` is already disabled", "クライアント `{1}` は既に無効です"),
    ("client `{}` is not disabled", "クライアント `{1}` は無効になっていません"),
    (
        "client `{}` uses a secret, not private_key_jwt",
        "クライアント `{1}` はシークレットを使います（private_key_jwt ではありません）",
    ),
    (
        "client `{}` has no secret (a public client, or one with keys)",
        "クライアント `{1}` にはシークレットがありません（公開クライアント、または鍵を使うクライアントです）",
    ),
    ("the JWK Set has no keys", "JWK Set に鍵がありません"),
    (
        "a key carries the private or symmetric member `{}`; register public keys only",
        "鍵に秘密鍵または共通鍵のメンバー `{1}` が含まれています。公開鍵だけを登録してください",
    ),
    ("only EC (P-256, P-384) and RSA keys can be registered", "登録できるのは EC（P-256、P-384）と RSA の鍵だけです"),
    ("no scope given", "スコープが指定されていません"),
    ("random: {}", "乱数: {1:t}"),
    ("oauth store unavailable: {}", "OAuthのストアを利用できません: {1:t}"),
    ("the access token is missing, expired or not valid", "アクセストークンがないか、期限切れか、無効です"),
    ("token storage failed", "トークンを保存できませんでした"),
    // Use cases.
    ("the export's own audit entry: {}", "エクスポート自体の監査エントリ: {1:t}"),
    ("class rules: {}", "情報区分の規則: {1:t}"),
    ("a change of the class rules must say why", "情報区分の規則の変更には理由が必要です"),
    ("the audit trail could not be written: {}", "監査証跡を書き込めませんでした: {1:t}"),
    ("storage: {}", "ストレージ: {1:t}"),
    ("crypto: {}", "暗号処理: {1:t}"),
    ("audit: {}", "監査: {1:t}"),
    ("the start of the period must be before its end", "期間の開始は終了より前にしてください"),
    ("no audit entry {}", "監査記録 {1} はありません"),
    ("audit entry {}: {}", "監査記録 {1}: {2:t}"),
    ("account `{}` is not active", "アカウント `{1}` は有効ではありません"),
    ("the batch size must be at least 1", "バッチサイズは1以上で指定してください"),
    ("a key rotation must say why", "鍵の更新には理由が必要です"),
    ("test table: {}", "テスト表: {1:t}"),
    ("policies: {}", "ポリシー: {1:t}"),
    ("{}: unknown action `{}`", "{1}: `{2}` は不明な操作です"),
    (
        "{}: expect must be `allow` or `deny`, not `{}`",
        "{1}: expect は `allow` か `deny` で指定してください（`{2}` ではなく）",
    ),
    (
        "{}: give either `roles` (a person) or `client_classes` (an application)",
        "{1}: `roles`（利用者）か `client_classes`（アプリケーション）のどちらかを指定してください",
    ),
    ("a change of policies must say why", "ポリシーの変更には理由が必要です"),
    ("no account `{}`", "アカウント `{1}` はありません"),
    ("no record `{}`", "記録 `{1}` はありません"),
    ("`{}` is not Type/id or Type/id/_history/n", "`{1}` は Type/id または Type/id/_history/n の形ではありません"),
    ("`{}` is not Type/id", "`{1}` は Type/id の形ではありません"),
    ("no campaign `{}`", "アクセス権の見直し `{1}` はありません"),
    ("an access review must say why it is opened", "アクセス権の見直しを始めるには理由が必要です"),
    ("no active account `{}`", "有効なアカウント `{1}` はありません"),
    ("no active accounts to review", "見直す有効なアカウントがありません"),
    ("`{}` is not in campaign {}", "`{1}` は見直し {2} の対象ではありません"),
    ("`{}` was already decided in {}", "`{1}` は見直し {2} で既に決定済みです"),
    ("`{}` does not hold the role `{}`", "`{1}` はロール `{2}` を持っていません"),
    ("closing a review needs a note", "レビューを閉じるには所見が必要です"),
    ("proofing date `{}` is not YYYY-MM-DD", "本人確認日 `{1}` は YYYY-MM-DD の形ではありません"),
    ("a transfer needs a new department or new roles", "異動には新しい部署または新しいロールが必要です"),
    ("the dormancy period must be at least one day", "休眠とみなす期間は1日以上で指定してください"),
    // Accounts (identity).
    ("password refused: {}", "パスワードが拒否されました: {1:t}"),
    ("webauthn: {}", "WebAuthn（パスキー）: {1:t}"),
    (
        "user name `{}` must be 3–64 of a–z 0–9 . _ - and start with a letter",
        "ユーザー名 `{1}` は a–z 0–9 . _ - の3〜64文字で、英字で始めてください",
    ),
    ("an account needs at least one role", "アカウントには少なくとも1つのロールが必要です"),
    (
        "--fhir-user `{}` must be Practitioner/ID or PractitionerRole/ID",
        "--fhir-user `{1}` は Practitioner/ID または PractitionerRole/ID で指定してください",
    ),
    (
        "account `{}` already exists (one account per person)",
        "アカウント `{1}` は既に存在します（アカウントは1人に1つ）",
    ),
    (
        "`{}` has left; a leaver's account is never re-enabled",
        "`{1}` は退職（離任）済みです。退職者のアカウントは再び有効にできません",
    ),
    ("`{}` has left", "`{1}` は退職（離任）済みです"),
    ("`{}` is not an emergency account", "`{1}` は非常用アカウントではありません"),
    ("the new sealed password must differ from the old one", "新しい封印パスワードは以前のものと異なる必要があります"),
    ("time before 1970", "1970年より前の時刻です"),
    // Records (import).
    ("invalid request: {}", "不正な要求: {1:t}"),
    ("{} not found", "{1} は見つかりません"),
    ("{} is deleted", "{1} は削除されています"),
    ("the search text is longer than 128 bytes", "検索文字列が長すぎます（128バイトまで）"),
    ("break-glass needs a `reason`", "非常時アクセスには理由の入力が必要です"),
    ("`reason` is longer than 1000 characters", "理由は1000文字以内で入力してください"),
    ("the duration must be between 1 minute and 24 hours", "期間は1分から24時間の間で指定してください"),
    ("version conflict: current version is {}, request named {}", "版の競合: 現在の版は {1}、要求された版は {2} です"),
    (
        "the condition matched {} resources; it must match at most one",
        "条件に {1} 件のリソースが一致しました。一致は1件までです",
    ),
    ("audit trail unavailable: {}", "監査証跡を利用できません: {1:t}"),
    ("expected a JSON number", "JSONの数値が必要です"),
    ("expected a JSON string", "JSONの文字列が必要です"),
    ("expected a JSON integer", "JSONの整数が必要です"),
    ("integer `{}` out of range", "整数 `{1}` は範囲外です"),
    ("control character U+{} at character {} is not allowed", "{2}文字目の制御文字 U+{1} は使えません"),
    ("empty string; omit the element instead", "空の文字列です。要素ごと省略してください"),
    ("`{}` is not a valid {}", "`{1}` は有効な {2} ではありません"),
    ("{}/{} is written by the server and cannot be changed", "{1}/{2} はサーバーが書き込むもので、変更できません"),
    ("{}/{} is written by the server and cannot be deleted", "{1}/{2} はサーバーが書き込むもので、削除できません"),
    ("{}/{} is not awaiting approval", "{1}/{2} は承認待ちではありません"),
    (
        "only {}, the author named at proxy entry (代行入力), can approve {}/{}",
        "{2}/{3} を承認できるのは、代行入力時に指定された作成者 {1} だけです",
    ),
    (
        "break-glass is for a person signed in, not an application",
        "非常時アクセス（break-glass）はサインインした利用者のためのもので、アプリケーションは使えません",
    ),
    ("no open break-glass review `{}`", "未完了の非常時アクセスのレビュー `{1}` はありません"),
    ("{}/{} is live; delete it before it can be purged", "{1}/{2} は有効な記録です。完全消去の前に削除してください"),
    (
        "{}/{} is within its retention period (保存期間, {} years) until {}",
        "{1}/{2} は保存期間（{3}年）内です（{4} まで）",
    ),
    ("resource type `{}`", "リソース型 `{1}`"),
    // The backup vault (#27, B1).
    (
        "no vault is configured: set [backup] vault and vault_token_file in mamori.toml",
        "ボールトが設定されていません。mamori.toml の [backup] vault と vault_token_file を設定してください",
    ),
    (
        "backup.vault needs backup.vault_token_file (and vault_ca for https)",
        "backup.vault には backup.vault_token_file（https では vault_ca も）が必要です",
    ),
    (
        "backup.vault_ca: the vault's CA certificate (PEM) is needed for https",
        "backup.vault_ca: https ではボールトの CA 証明書（PEM）が必要です",
    ),
    (
        "`{}.age` is already in the vault, which never replaces a file",
        "`{1}.age` は既にボールトにあります。ボールトはファイルを置き換えません",
    ),
    ("`{}` does not parse: {}", "`{1}` を解釈できません: {2:t}"),
    ("`{}` is already a vault", "`{1}` は既にボールトです"),
    (
        "`{}` is already in the vault, which never replaces a file",
        "`{1}` は既にボールトにあります。ボールトはファイルを置き換えません",
    ),
    ("`{}` is not a node verifier key: {}", "`{1}` はノードの検証鍵ではありません: {2:t}"),
    (
        "`{}` is not a vault: make one with `mamori backup vault init --dir {}`",
        "`{1}` はボールトではありません。`mamori backup vault init --dir {2}` で作成してください",
    ),
    ("a manifest is UTF-8 text", "マニフェストは UTF-8 のテキストです"),
    ("a manifest is at most 1 MiB", "マニフェストは 1 MiB までです"),
    (
        "a vault needs the verifier key of at least one node (`mamori audit verifier-key` on that node)",
        "ボールトには少なくとも1つのノードの検証鍵（そのノードで `mamori audit verifier-key`）が必要です",
    ),
    ("backup vault: {}", "バックアップボールト: {1:t}"),
    ("no answer from {}:{} within {} s", "{1}:{2} から {3} 秒以内に応答がありません"),
    ("no answer from {}:{}", "{1}:{2} から応答がありません"),
    ("cannot read the maintenance windows: {}", "保守作業の時間枠を読めません: {1:t}"),
    ("`{}` is not an address or CIDR block", "`{1}` はアドレスまたは CIDR ブロックではありません"),
    ("account `{}` does not hold the role `{}`", "アカウント `{1}` は役割 `{2}` を持っていません"),
    ("a vendor needs a name, a contact and a contract reference", "保守事業者には名称・連絡先・契約の参照が必要です"),
    ("a request names the system or function and the purpose", "申請には対象のシステム・機能と目的が必要です"),
    ("a request lists at least one planned work item", "申請には作業項目を1つ以上挙げてください"),
    ("the window must end after it starts", "時間枠の終了は開始より後にしてください"),
    ("the window ends in the past", "時間枠の終了が過去です"),
    (
        "the window is longer than [maintenance] max_hours ({} h)",
        "時間枠が [maintenance] max_hours（{1} 時間）を超えています",
    ),
    ("vendor `{}` has no maintenance accounts", "保守事業者 `{1}` には作業者アカウントがありません"),
    ("`{}` is not a maintenance account of `{}`", "`{1}` は `{2}` の作業者アカウントではありません"),
    ("act `{}` cannot be given to a vendor (possible: {})", "操作 `{1}` は保守事業者に許可できません（可能: {2}）"),
    ("`{}` is not an information class", "`{1}` は情報区分ではありません"),
    ("`{}` is not a patient reference (Patient/id)", "`{1}` は患者の参照（Patient/id）ではありません"),
    ("the scope is empty: name the acts, or the patient data", "作業範囲が空です。操作か患者データを指定してください"),
    (
        "patient data needs its information classes, its patients and read or write — all three",
        "患者データには情報区分・患者・参照または更新の3つすべての指定が必要です",
    ),
    ("refusing needs a note for the vendor", "却下には保守事業者への説明が必要です"),
    ("ending a window needs a reason", "時間枠を終了するには理由が必要です"),
    ("item {} is not one of the {} planned", "項目 {1} は計画された {2} 項目のいずれでもありません"),
    ("item {} is reported twice", "項目 {1} が二重に報告されています"),
    ("item {}: say what was done (or why not)", "項目 {1}: 実施内容（または実施しなかった理由）を記入してください"),
    ("every planned item needs a result; missing: {}", "すべての作業項目に結果が必要です。不足: {1}"),
    (
        "an erasure record says what, where, how, when and by whom",
        "消去記録には、何を・どこで・どの方法で・いつ・誰が、を記入してください",
    ),
    ("returning a report needs a note saying what is missing", "差し戻しには不足している点の説明が必要です"),
    ("name the system or function", "システムまたは機能を指定してください"),
    ("no vendor `{}`", "保守事業者 `{1}` はありません"),
    ("no maintenance window `{}`", "保守作業の時間枠 `{1}` はありません"),
    ("no register entry for {} by {}", "{2} による {1} の台帳登録はありません"),
    ("window {} is {}, not awaiting approval", "時間枠 {1} は {2} で、承認待ちではありません"),
    (
        "you have already approved window {}; another person must",
        "時間枠 {1} はすでに承認済みです。別の人が承認してください",
    ),
    ("window {} has already ended; ask for a new one", "時間枠 {1} はすでに終了しています。改めて申請してください"),
    ("window {} is {}; it can no longer be withdrawn", "時間枠 {1} は {2} で、もう取り下げられません"),
    ("window {} is {}, not approved or open", "時間枠 {1} は {2} で、承認済みでも作業中でもありません"),
    (
        "window {} is {}; a report is filed once the window has ended",
        "時間枠 {1} は {2} です。報告は時間枠の終了後に提出します",
    ),
    ("window {} is {}, no report waits", "時間枠 {1} は {2} で、確認待ちの報告はありません"),
    (
        "window {} is {}; only a request awaiting approval can be changed",
        "時間枠 {1} は {2} です。変更できるのは承認待ちの申請だけです",
    ),
    ("changing a request needs a note saying why", "申請の変更には理由の記入が必要です"),
    (
        "a request stays with its vendor; file a new one for another",
        "申請の保守事業者は変更できません。別の事業者は新しく申請してください",
    ),
    ("the report of window {} has not been accepted", "時間枠 {1} の報告はまだ受理されていません"),
    (
        "maintenance.max_hours must be 1–168, approvers 1 or 2 and report_days 1–90",
        "maintenance.max_hours は 1〜168、approvers は 1 か 2、report_days は 1〜90 にしてください",
    ),
    ("cannot connect to {}:{}: {}", "{1}:{2} に接続できません: {3:t}"),
    (
        "backup.vault: `{}`: plain http only to a loopback address; use https",
        "backup.vault: `{1}`: 暗号化しない http はループバックアドレスだけです。https を使ってください",
    ),
    ("backup.vault: `{}`: scheme `{}` is not http(s)", "backup.vault: `{1}`: スキーム `{2}` は http(s) ではありません"),
    ("cannot store `{}`: {}", "`{1}` を保存できません: {2:t}"),
    ("cannot write the manifest: {}", "マニフェストを書き込めません: {1:t}"),
    ("cannot write the upload: {}", "受信したファイルを書き込めません: {1:t}"),
    (
        "generation {} already has another manifest in the vault, which never replaces a file",
        "世代 {1} には既に別のマニフェストがボールトにあります。ボールトはファイルを置き換えません",
    ),
    ("generation {}: send its manifest first", "世代 {1}: 先にマニフェストを送ってください"),
    (
        "generation {}: the data ({} bytes, sha256 {}) is not what its manifest says ({} bytes, sha256 {}): refused",
        "世代 {1}: データ（{2} バイト、sha256 {3}）がマニフェストの記載（{4} バイト、sha256 {5}）と一致しないため拒否しました",
    ),
    (
        "generation {}: the data is longer than its manifest says ({} bytes): refused",
        "世代 {1}: データがマニフェストの記載（{2} バイト）より長いため拒否しました",
    ),
    (
        "generation {}: the manifest is not signed by a node this vault takes: refused",
        "世代 {1}: マニフェストがこのボールトの受け入れるノードの署名ではないため拒否しました",
    ),
    ("not a generation name", "世代の名前ではありません"),
    ("the vault takes no node's generations", "このボールトはどのノードの世代も受け入れません"),
    (
        "the vault's retention lock is {} days: nothing younger is ever removed",
        "ボールトの保持ロックは {1} 日です。それより新しいものは削除されません",
    ),
    ("upload already finished", "受信は既に終わっています"),
    ("vault settings: {}", "ボールトの設定: {1:t}"),
    // Backups (#27).
    (
        "a backup restore into this store did not finish: it is not a copy of anything; remove it and restore again",
        "このストアへのバックアップの復元は完了していません。何の複製でもないため、削除してもう一度復元してください",
    ),
    ("cannot read the store's flags", "ストアのフラグを読めません"),
    ("cannot sign the drill: {}", "復元訓練の結果に署名できません: {1:t}"),
    ("drill: {}", "復元訓練: {1:t}"),
    ("no randomness: {}", "乱数を得られません: {1:t}"),
    (
        "backup.every_hours needs backup.repository and backup.recipients",
        "backup.every_hours には backup.repository と backup.recipients が必要です",
    ),
    (
        "backup.keep_last must be at least 5 (the EHR keeps at least five generations)",
        "backup.keep_last は 5 以上にしてください（少なくとも 5 世代を保持します）",
    ),
    ("backup.every_hours must be 1–744", "backup.every_hours は 1〜744 にしてください"),
    ("backup.drill_days must be 1–366", "backup.drill_days は 1〜366 にしてください"),
    ("cannot read the emergency mode: {}", "非常時モードの状態を読めません: {1:t}"),
    ("switching emergency read-only mode needs a reason", "非常時の参照専用モードの切り替えには理由が必要です"),
    (
        "the system is in emergency read-only mode: records can be read but not written",
        "非常時の参照専用モードです。記録の閲覧はできますが、書き込みはできません",
    ),
    ("emergency read-only mode is already on", "非常時の参照専用モードはすでにオンです"),
    ("emergency read-only mode is already off", "非常時の参照専用モードはすでにオフです"),
    (
        "give --verifier-key (from `mamori audit verifier-key`) or --data-dir of the node that took the backups",
        "--verifier-key（`mamori audit verifier-key` の出力）か、バックアップを取ったノードの --data-dir を指定してください",
    ),
    (
        "give --repo (or set [backup] repository in mamori.toml)",
        "--repo を指定してください（または mamori.toml の [backup] repository）",
    ),
    (
        "--as-of `{}` is not an RFC 3339 time such as 2026-12-05T09:00:00+09:00",
        "--as-of の `{1}` は RFC 3339 の時刻ではありません（例: 2026-12-05T09:00:00+09:00）",
    ),
    ("cannot read the identity file `{}`: {}", "鍵ファイル（identity）`{1}` を読めません: {2:t}"),
    ("`{}` holds a line that is not an age identity", "`{1}` に age の秘密鍵ではない行があります"),
    ("`{}` holds no age identity", "`{1}` に age の秘密鍵がありません"),
    ("the verifier key does not parse: {}", "検証鍵を解釈できません: {1:t}"),
    (
        "generation {}: the manifest's signature does not verify with this node's key ({}): it was not written by this node or was changed",
        "世代 {1}: マニフェストの署名がこのノードの鍵で検証できません（{2:t}）。このノードが書いたものではないか、変更されています",
    ),
    ("generation {}: not a backup manifest", "世代 {1}: バックアップのマニフェストではありません"),
    ("generation {}: the manifest does not parse: {}", "世代 {1}: マニフェストを解釈できません: {2:t}"),
    (
        "generation {}: the manifest is generation {}'s: files were renamed",
        "世代 {1}: マニフェストは世代 {2} のものです。ファイル名が変えられています",
    ),
    ("generation {}: not an age file: {}", "世代 {1}: age 形式のファイルではありません: {2:t}"),
    ("generation {}: cannot decrypt with this identity: {}", "世代 {1}: この秘密鍵では復号できません: {2:t}"),
    ("generation {}: {}", "世代 {1}: {2:t}"),
    ("generation {}: the store copy: {}", "世代 {1}: ストアの複製: {2:t}"),
    (
        "generation {} has store schema {} (Mamori {}); this build has schema {}: restore it with Mamori {}",
        "世代 {1} のストアのスキーマは {2}（Mamori {3}）ですが、このビルドは {4} です。Mamori {5} で復元してください",
    ),
    (
        "generation {}: the data file differs from the manifest ({} bytes, manifest says {}): it was changed or damaged",
        "世代 {1}: データファイルがマニフェストと一致しません（{2} バイト、マニフェストでは {3}）。変更または破損しています",
    ),
    ("generation {}: its data file `{}` is missing", "世代 {1}: データファイル `{2}` がありません"),
    ("no backup repository at `{}`", "`{1}` にバックアップの保存先がありません"),
    ("no backup generation in `{}`", "`{1}` にバックアップの世代がありません"),
    ("no backup generation `{}` in `{}`", "`{2}` にバックアップの世代 `{1}` はありません"),
    (
        "`{}` is not empty: a backup is restored only into a new data directory",
        "`{1}` は空ではありません。バックアップは新しいデータディレクトリにのみ復元します",
    ),
    (
        "the target database is not empty: a backup is restored only into a new, empty database",
        "復元先のデータベースが空ではありません。バックアップは新しい空のデータベースにのみ復元します",
    ),
    (
        "backups are taken and restored at the server's command line",
        "バックアップの取得と復元はサーバーのコマンドラインで行います",
    ),
    ("cannot encrypt: {}", "暗号化できません: {1:t}"),
    ("cannot write the backup: {}", "バックアップを書き込めません: {1:t}"),
    ("manifest: {}", "マニフェスト: {1:t}"),
    ("cannot sign the manifest: {}", "マニフェストに署名できません: {1:t}"),
    ("cannot list `{}`: {}", "`{1}` の一覧を取得できません: {2:t}"),
    ("cannot read `{}`: {}", "`{1}` を読めません: {2:t}"),
    (
        "backup.recipients: `{}` is not an age public key (age1…); make one with `mamori backup keygen`",
        "backup.recipients: `{1}` は age の公開鍵（age1…）ではありません。`mamori backup keygen` で作成してください",
    ),
];

/// Words for the command line's own frame around a message.
pub fn caused_by(lang: Lang) -> &'static str {
    match lang {
        Lang::Ja => "原因",
        Lang::En => "caused by",
    }
}

/// `message` in `lang`: English as written; Japanese from the catalogue where a template
/// matches, else as written.
pub fn localize(message: &str, lang: Lang) -> Cow<'_, str> {
    match lang {
        Lang::En => Cow::Borrowed(message),
        Lang::Ja => match translate(message) {
            Some(t) => Cow::Owned(t),
            None => Cow::Borrowed(message),
        },
    }
}

fn translate(message: &str) -> Option<String> {
    let mut best: Option<(usize, &str, Vec<&str>)> = None;
    for (en, ja) in JA {
        let literal = en.len() - 2 * en.matches("{}").count();
        if best.as_ref().is_some_and(|(l, _, _)| *l >= literal) {
            continue;
        }
        if let Some(caps) = matches(en, message) {
            best = Some((literal, ja, caps));
        }
    }
    let (_, ja, caps) = best?;
    Some(fill(ja, &caps))
}

/// The texts `template`'s `{}`s match in `message`, if it matches as a whole.
fn matches<'m>(template: &str, message: &'m str) -> Option<Vec<&'m str>> {
    let parts: Vec<&str> = template.split("{}").collect();
    let (first, rest) = parts.split_first()?;
    let tail = message.strip_prefix(first)?;
    let mut caps = Vec::new();
    bind(rest, tail, &mut caps).then_some(caps)
}

/// Backtracking: each remaining literal is found after a capture (of any length).
fn bind<'m>(literals: &[&str], text: &'m str, caps: &mut Vec<&'m str>) -> bool {
    let Some((lit, rest)) = literals.split_first() else {
        return text.is_empty();
    };
    if rest.is_empty() {
        // The last literal ends the message.
        return match text.strip_suffix(lit) {
            Some(cap) => {
                caps.push(cap);
                true
            }
            None => false,
        };
    }
    let mut from = 0;
    while let Some(found) = text.get(from..).and_then(|t| t.find(lit)) {
        let at = from + found;
        let (Some(cap), Some(after)) = (text.get(..at), text.get(at + lit.len()..)) else {
            return false;
        };
        caps.push(cap);
        if bind(rest, after, caps) {
            return true;
        }
        caps.pop();
        from = at + text.get(at..).and_then(|t| t.chars().next()).map_or(1, char::len_utf8);
    }
    false
}

/// Puts captures back into a Japanese template: `{n}` as is, `{n:t}` translated.
fn fill(template: &str, caps: &[&str]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(rest.get(..open).unwrap_or_default());
        let after = rest.get(open + 1..).unwrap_or_default();
        let Some(close) = after.find('}') else {
            out.push_str(rest.get(open..).unwrap_or_default());
            return out;
        };
        let spec = after.get(..close).unwrap_or_default();
        let (n, translated) = spec.strip_suffix(":t").map_or((spec, false), |n| (n, true));
        match n.parse::<usize>().ok().and_then(|i| i.checked_sub(1)).and_then(|i| caps.get(i)) {
            Some(cap) if translated => out.push_str(&localize(cap, Lang::Ja)),
            Some(cap) => out.push_str(cap),
            None => out.push_str(rest.get(open..=open + 1 + close).unwrap_or_default()),
        }
        rest = after.get(close + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_and_reorder() {
        let ja = |m: &str| localize(m, Lang::Ja).into_owned();
        assert_eq!(ja("cannot read `/etc/x.toml`"), "`/etc/x.toml` を読み込めません");
        assert_eq!(ja("cannot restrict `/d/keys`"), "`/d/keys` をアクセス権の制限できません");
        assert_eq!(ja("no client `a` b`"), "クライアント `a` b` はありません");
        assert_eq!(
            ja("Patient/p1 is within its retention period (保存期間, 5 years) until 2031-01-01"),
            "Patient/p1 は保存期間（5年）内です（2031-01-01 まで）"
        );
        // Backtracking: the first `: ` is not always the separator.
        assert_eq!(ja("no randomness for `a: b`: c: d"), "`a: b` のための乱数を得られません: c: d");
        // The most specific template wins over a general one.
        assert_eq!(ja("cannot read `mamori.toml`"), "`mamori.toml` を読み込めません");
        // Composed messages: each part.
        assert_eq!(
            ja("`/d/mamori.toml`: store.database must be a postgres:// URL (or absent for the embedded store)"),
            "`/d/mamori.toml`: store.database には postgres:// で始まるURLを指定してください（組み込みストアを使う場合は指定しません）"
        );
        assert_eq!(ja("policies: no scope given"), "ポリシー: スコープが指定されていません");
        assert_eq!(ja("x: y"), "x: y");
        // The vault client's errors, as the console's backups page shows them.
        assert_eq!(
            ja("backup vault: no answer from 127.0.0.1:9 within 30 s"),
            "バックアップボールト: 127.0.0.1:9 から 30 秒以内に応答がありません"
        );
        assert_eq!(
            ja("backup vault: cannot connect to 127.0.0.1:9: Connection refused (os error 111)"),
            "バックアップボールト: 127.0.0.1:9 に接続できません: Connection refused (os error 111)"
        );
        // No entry: as written; English: always as written.
        assert_eq!(ja("something new"), "something new");
        assert_eq!(localize("no client `a`", Lang::En), "no client `a`");
    }

    #[test]
    fn the_language_comes_from_mamori_lang_then_the_posix_locale() {
        let from = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Lang::from_vars(|n| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
        };
        assert_eq!(from(&[]), Lang::En);
        assert_eq!(from(&[("LANG", "ja_JP.UTF-8")]), Lang::Ja);
        assert_eq!(from(&[("LANG", "ja_JP.UTF-8"), ("LC_ALL", "C")]), Lang::En);
        assert_eq!(from(&[("LANG", "C.UTF-8"), ("MAMORI_LANG", "ja")]), Lang::Ja);
        assert_eq!(from(&[("LC_MESSAGES", ""), ("LANG", "ja")]), Lang::Ja);
        assert_eq!(Lang::from_tag("ja-JP"), Some(Lang::Ja));
        assert_eq!(Lang::from_tag("jav"), Some(Lang::En));
    }

    #[test]
    fn every_template_is_well_formed() {
        for (en, ja) in JA {
            let n = en.matches("{}").count();
            for i in 1..=n {
                assert!(ja.contains(&format!("{{{i}}}")) || ja.contains(&format!("{{{i}:t}}")), "{en}: {{{i}}} unused");
            }
            assert!(!ja.contains(&format!("{{{}}}", n + 1)), "{en}: {ja} names a match that is not there");
            assert!(!ja.is_ascii() || ja.contains(":t}"), "{en}: not translated");
        }
    }

    /// Every error message written in the code that can reach a person through the command line
    /// has a Japanese template (a new message without one fails here, not in front of staff).
    #[test]
    fn catalogue_covers_every_error_written_in_the_code() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dirs = [
            "src",
            "crates/app/src",
            "crates/identity/src",
            "crates/oauth/src",
            "crates/store-sql/src",
            "crates/records/src",
        ];
        let mut missing = Vec::new();
        let mut seen = 0;
        for dir in dirs {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for message in written_errors(code) {
                    seen += 1;
                    let template = placeholders(&message);
                    let known = JA.iter().any(|(en, _)| *en == template)
                        || !template.is_ascii()
                        || template.chars().all(|c| !c.is_ascii_alphabetic());
                    if !known {
                        missing.push(format!("{}: {template}", path.display()));
                    }
                }
            }
        }
        assert!(seen > 150, "the scan finds the messages ({seen})");
        assert!(missing.is_empty(), "messages without a Japanese template:\n{}", missing.join("\n"));
    }

    /// The string literals given to the error constructors and `context` in `code`, and the
    /// `#[error("…")]` attributes.
    fn written_errors(code: &str) -> Vec<String> {
        const OPENERS: [&str; 14] = [
            "Err(",
            "context(",
            "Invalid(",
            "NotFound(",
            "Conflict(",
            "Forbidden(",
            "Failed(",
            "Usage(",
            "Keys(",
            "Stored(",
            "Unavailable(",
            "#[error(",
            "Error::Invalid(",
            "Error::Unavailable(",
        ];
        let mut out = Vec::new();
        for opener in OPENERS {
            for (at, _) in code.match_indices(opener) {
                let after = code.get(at + opener.len()..).unwrap_or_default().trim_start();
                let after = after.strip_prefix("format!(").map_or(after, str::trim_start);
                let Some(body) = after.strip_prefix('"') else { continue };
                if let Some(lit) = literal(body) {
                    out.push(lit);
                }
            }
        }
        out
    }

    /// A Rust string literal's content up to its closing quote, with `\` line continuations joined.
    fn literal(body: &str) -> Option<String> {
        let mut out = String::new();
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => match chars.next()? {
                    '\n' => {
                        while chars.peek().is_some_and(|c| c.is_whitespace()) {
                            chars.next();
                        }
                    }
                    'n' => out.push('\n'),
                    other => out.push(other),
                },
                c => out.push(c),
            }
        }
        None
    }

    /// `{name}`, `{}`, `{:?}`… → `{}`; `{{`/`}}` stay as written.
    fn placeholders(message: &str) -> String {
        let mut out = String::new();
        let mut rest = message;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('}') {
                Some(close) => {
                    out.push_str("{}");
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str(&rest[open..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}
