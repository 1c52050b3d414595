import json
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
S = ["VADER is smart, handsome, and funny.", "VADER is smart, handsome, and funny!",
 "VADER is very smart, handsome, and funny.", "VADER is VERY SMART, handsome, and FUNNY.",
 "VADER is VERY SMART, handsome, and FUNNY!!!", "VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!",
 "VADER is not smart, handsome, nor funny.", "The book was good.", "At least it isn't a horrible book.",
 "The book was only kind of good.", "The plot was good, but the characters are uncompelling and the dialog is not great.",
 "Today SUX!", "Today only kinda sux! But I'll get by, lol", "Make sure you :) or :D today!",
 "Catch utf-8 emoji such as 💘 and 💋 and 😁", "Not bad at all",
 "Sentiment analysis has never been good.", "Sentiment analysis has never been this good!",
 "Most automated sentiment analysis tools are shit.", "With VADER, sentiment analysis is the shit!",
 "Other sentiment analysis tools can be quite bad.", "On the other hand, VADER is quite bad ass",
 "VADER is such a badass!", "Without a doubt, excellent idea.",
 "Roger Dodger is one of the most compelling variations on this theme.",
 "Roger Dodger is at least compelling as a variation on the theme.",
 "Roger Dodger is one of the least compelling variations on this theme.",
 "Not such a badass after all.", "Without a doubt, an excellent idea.",
 "No problem at all", "no good", "This is no joke", "Is it good??", "Is it good????", "",
 "I hate it", "I don't hate it", "It is not that bad", "kind of terrible", "sort of great",
 "Yay. Another good phone interview.", "YAY!!! Another EXTREMELY GOOD phone interview!!!",
 "The food here is great, but the service is horrible", "The food here isn't really all that great",
 "bad bad but bad bad", "great, great, but great"]
a = SentimentIntensityAnalyzer()
out = [{"text": s, **a.polarity_scores(s)} for s in S]
json.dump(out, open("eval/out/vader332_golden.json", "w", encoding="utf-8"), ensure_ascii=False, indent=1)
for o in out: print(f'{o["compound"]:>8} {o["neg"]:>6} {o["neu"]:>6} {o["pos"]:>6}  {o["text"]}')
