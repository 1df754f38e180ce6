// The built-in text that make-tokenizer learns its merges from. Written for Tandem: plain
// English, grade-school arithmetic word problems with worked answers (in both the '####'
// style and the <reasoning>/<answer> style the GSM8K rewards look for), chat turns, code,
// numbers, punctuation and a few words in other scripts, so the small model's tokenizer
// has sensible pieces for what it is trained and tested on. Anything else still encodes,
// through the 256 byte tokens.

const PROSE = `The morning was cold, so Maya wore her red coat and walked to the station.
A small town sits at the edge of the river. Every spring the water rises, and every summer it falls again.
The library opens at nine o'clock and closes at six. On Saturdays it closes at noon.
He said that the answer was wrong, but she checked it twice and it was right.
We planted tomatoes, beans, carrots and onions in the garden behind the house.
The teacher asked the students to show their work, not only the final number.
If you want to learn something well, practice it a little every day.
The train was late because of the snow, and the passengers waited on the platform.
There are seven days in a week, twelve months in a year, and about four weeks in a month.
She bought a new notebook, three pencils and an eraser before the first day of school.
The bakery sells bread in the morning and cakes in the afternoon.
They're going to the market, and we'll meet them there at ten.
I've read that book before; it's about a girl who sails around the world.
When the sun went down, the sky turned orange, then pink, then dark blue.
Please write your name at the top of the page and read each question carefully.
The farmer counted the sheep in the field: there were more than yesterday.
A good answer explains each step, so that another person can follow the reasoning.
Water boils at 100 degrees Celsius at sea level and freezes at 0 degrees.
The museum has paintings, old maps, and a large model of a ship.
My brother likes apples, but my sister prefers oranges and grapes.
The store is open from Monday to Friday, and on weekends it opens later.
It takes twenty minutes to walk to school and five minutes by bike.
Our team won the game by three points after a long and difficult second half.
The cat slept on the warm windowsill while the dog chased a ball in the yard.
Every number has a place value: ones, tens, hundreds, thousands and so on.
Think about the problem first, then write down what you know and what you need to find.
The price went up by ten percent last year and by five percent this year.
After the rain stopped, the children ran outside to play in the puddles.
A recipe for pancakes needs flour, eggs, milk, butter and a pinch of salt.
The bus leaves every fifteen minutes during the day and every hour at night.
`;

const MORE_PROSE = `Long ago, a fisherman lived in a wooden hut by the sea. Each dawn he rowed his boat past the lighthouse, cast his nets, and waited quietly. Some days the nets came up heavy and silver; other days they came up empty, and he rowed home hungry but patient.
Scientists measure temperature, pressure, distance and time with careful instruments. A thermometer tells how hot or cold something is, a ruler measures length, and a clock measures time.
Plants need sunlight, water and air to grow. Their leaves turn sunlight into energy, and their roots drink water from the soil.
The human heart beats about seventy times a minute. It pumps blood through arteries and veins to every part of the body.
In the old city, narrow streets wind between stone houses, and bright flowers hang from the balconies above the squares.
Computers store everything as numbers. Letters, pictures, sounds and programs all become long sequences of zeros and ones.
A library card lets you borrow books, magazines, movies and music for free, as long as you return them on time.
Mountains are formed over millions of years when huge plates of rock push against each other and slowly fold upward.
The grocery list said: milk, eggs, bread, cheese, rice, potatoes, chicken, lettuce, lemons, coffee and sugar.
Honesty, kindness and curiosity are valuable qualities. Good friends listen carefully and speak truthfully.
The weather forecast predicts light rain tomorrow morning, clearing skies by the evening, and strong winds on Thursday.
Our neighbors adopted a puppy named Biscuit. He is brown and white, with floppy ears and a very loud bark.
Electricity flows through copper wires. A switch opens or closes the circuit, turning the lamp off or on.
The orchestra tuned their violins, cellos, flutes, trumpets and drums before the concert began.
Exercise keeps the body strong. Walking, swimming, cycling and dancing are all healthy activities.
A volcano erupted on the island, sending ash high into the atmosphere and lava down toward the ocean.
The company hired twelve new employees, opened a second office, and doubled its revenue within two years.
Students learn addition, subtraction, multiplication and division before they study fractions, decimals and percentages.
The detective examined the footprints, questioned the witnesses, and finally solved the mysterious case.
Yesterday, the baker sold forty loaves; today, she expects to sell even more because of the holiday.
Remember to check your units: meters are not kilometers, grams are not kilograms, and minutes are not hours.
Whenever possible, estimate the answer first. If the exact result is far from the estimate, something went wrong.
Bees visit flowers to collect nectar, and while doing so they carry pollen from one blossom to another.
The spaceship orbited the planet twice, photographed its frozen moons, and sent the images back to Earth.
Grandmother's kitchen always smelled of cinnamon, fresh bread, and strong black tea.
Traffic was heavy on the highway, so we took the scenic road through the quiet valley instead.
Each chapter of the textbook ends with exercises, a short summary, and a list of important vocabulary words.
The hospital, the post office, the police station and the fire department are all on Main Street.
Knowledge grows when it is shared. Teaching someone else is one of the best ways to understand an idea yourself.
Why did the chicken cross the road? Nobody knows for certain, but everyone has an opinion.
`;

const WORD_PROBLEMS = `Question: Lena has 24 marbles. She gives 7 marbles to her friend and buys 12 more. How many marbles does Lena have now?
Answer: After giving some away, Lena has 24 - 7 = <<24-7=17>>17 marbles.
Then she buys more, so she has 17 + 12 = <<17+12=29>>29 marbles.
#### 29

Question: A bakery makes 36 muffins in each batch. It bakes 5 batches on Monday. How many muffins does it bake on Monday?
Answer: The bakery makes 36 * 5 = <<36*5=180>>180 muffins.
#### 180

Question: Tom reads 15 pages of his book every day. The book has 240 pages. How many days will it take Tom to finish the book?
Answer: Tom needs 240 / 15 = <<240/15=16>>16 days.
#### 16

Question: A shirt costs $18 and a pair of shoes costs three times as much. How much do the shirt and the shoes cost together?
Answer: The shoes cost 18 * 3 = <<18*3=54>>54 dollars.
Together they cost 18 + 54 = <<18+54=72>>72 dollars.
#### 72

Question: Sara earns $12 an hour babysitting. Yesterday she babysat for 50 minutes. How much did she earn?
Answer: Sara earns 12 / 60 = $<<12/60=0.2>>0.2 per minute.
For 50 minutes she earned 0.2 * 50 = $<<0.2*50=10>>10.
#### 10

Question: There are 30 students in a class. Two fifths of them walk to school and the rest take the bus. How many students take the bus?
Answer: The number who walk is 30 * 2 / 5 = <<30*2/5=12>>12 students.
So 30 - 12 = <<30-12=18>>18 students take the bus.
#### 18

Question: A garden has 8 rows of carrots with 14 carrots in each row. Rabbits eat 19 carrots. How many carrots are left?
Answer: The garden had 8 * 14 = <<8*14=112>>112 carrots.
After the rabbits, 112 - 19 = <<112-19=93>>93 carrots are left.
#### 93

Question: Mark buys 4 notebooks for $3 each and 2 pens for $1.50 each. He pays with a $20 bill. How much change does he get?
Answer: The notebooks cost 4 * 3 = $<<4*3=12>>12.
The pens cost 2 * 1.50 = $<<2*1.50=3>>3.
In total he spends 12 + 3 = $<<12+3=15>>15.
His change is 20 - 15 = $<<20-15=5>>5.
#### 5

Question: A train travels 60 miles per hour. How far does it travel in 3 and a half hours?
Answer: The train travels 60 * 3.5 = <<60*3.5=210>>210 miles.
#### 210

Question: Emma had 45 stickers. She put them equally into 5 albums and then added 4 more stickers to each album. How many stickers are in each album?
Answer: Each album first gets 45 / 5 = <<45/5=9>>9 stickers.
After adding more, each album has 9 + 4 = <<9+4=13>>13 stickers.
#### 13

Question: A water tank holds 500 liters. It is 40% full. How many more liters are needed to fill it?
Answer: The tank has 500 * 0.4 = <<500*0.4=200>>200 liters.
It needs 500 - 200 = <<500-200=300>>300 more liters.
#### 300

Question: James runs 3 sprints 3 times a week. He runs 60 meters each sprint. How many total meters does he run a week?
Answer: He runs 3 * 3 = <<3*3=9>>9 sprints a week.
So he runs 9 * 60 = <<9*60=540>>540 meters.
#### 540

Question: A pizza is cut into 8 slices. Four friends order 3 pizzas and each friend eats the same number of slices. How many slices does each friend eat?
Answer: There are 3 * 8 = <<3*8=24>>24 slices.
Each friend eats 24 / 4 = <<24/4=6>>6 slices.
#### 6

Question: Olivia saves $15 every week. How many weeks does she need to save to buy a bike that costs $225?
Answer: She needs 225 / 15 = <<225/15=15>>15 weeks.
#### 15

Question: A farmer has 17 cows and twice as many chickens. Each cow has 4 legs and each chicken has 2 legs. How many legs are there in total?
Answer: The farmer has 17 * 2 = <<17*2=34>>34 chickens.
The cows have 17 * 4 = <<17*4=68>>68 legs.
The chickens have 34 * 2 = <<34*2=68>>68 legs.
In total there are 68 + 68 = <<68+68=136>>136 legs.
#### 136

Question: A box of crayons has 64 crayons. Noah uses 1/4 of them for a poster and gives 10 to his sister. How many crayons does he have left?
Answer: For the poster he uses 64 / 4 = <<64/4=16>>16 crayons.
He has 64 - 16 - 10 = <<64-16-10=38>>38 crayons left.
#### 38

Question: The school fair sold 125 tickets on Friday and 85 more tickets on Saturday than on Friday. How many tickets were sold on both days?
Answer: On Saturday it sold 125 + 85 = <<125+85=210>>210 tickets.
On both days it sold 125 + 210 = <<125+210=335>>335 tickets.
#### 335

Question: A car uses 6 liters of fuel for every 100 kilometers. How much fuel does it use for a trip of 450 kilometers?
Answer: The trip is 450 / 100 = <<450/100=4.5>>4.5 hundreds of kilometers.
It uses 4.5 * 6 = <<4.5*6=27>>27 liters.
#### 27

Question: Ben is 4 years older than Ana. In 6 years, the sum of their ages will be 40. How old is Ana now?
Answer: In 6 years both are 6 years older, so now the sum of their ages is 40 - 12 = <<40-12=28>>28.
If Ana is x years old, then x + x + 4 = 28, so 2x = 24 and x = <<24/2=12>>12.
#### 12

Question: A shop sells pencils in packs of 12. A teacher needs 150 pencils. How many packs must she buy?
Answer: 150 / 12 = 12.5, so 12 packs are not enough.
She must buy 13 packs, which is 13 * 12 = <<13*12=156>>156 pencils.
#### 13
`;

const MORE_WORD_PROBLEMS = `Question: A library had 1,200 books. It bought 350 new books and gave away 125 old ones. How many books does the library have now?
Answer: After buying, it had 1200 + 350 = <<1200+350=1550>>1550 books.
After giving some away, it has 1550 - 125 = <<1550-125=1425>>1425 books.
#### 1425

Question: Grace walks her dog for 25 minutes in the morning and 35 minutes in the evening. How many hours does she walk her dog in a week?
Answer: Each day she walks 25 + 35 = <<25+35=60>>60 minutes, which is 1 hour.
In a week she walks 7 * 1 = <<7*1=7>>7 hours.
#### 7

Question: A baker uses 3 cups of flour for each cake. She has 20 cups of flour. How many cakes can she make, and how much flour is left over?
Answer: She can make 20 // 3 = <<20//3=6>>6 whole cakes.
They use 6 * 3 = <<6*3=18>>18 cups, so 20 - 18 = <<20-18=2>>2 cups are left over.
#### 6

Question: Peter bought a bicycle for $240 and sold it a year later for 75% of the price. How much money did he lose?
Answer: He sold it for 240 * 0.75 = $<<240*0.75=180>>180.
He lost 240 - 180 = $<<240-180=60>>60.
#### 60

Question: In a parking lot there are 48 cars and 15 motorcycles. Cars have 4 wheels and motorcycles have 2. How many wheels are there altogether?
Answer: The cars have 48 * 4 = <<48*4=192>>192 wheels.
The motorcycles have 15 * 2 = <<15*2=30>>30 wheels.
Altogether there are 192 + 30 = <<192+30=222>>222 wheels.
#### 222

Question: Kim picked 56 strawberries. She ate 8, gave a quarter of the rest to her mother, and used the others in a pie. How many strawberries went into the pie?
Answer: After eating some she had 56 - 8 = <<56-8=48>>48 strawberries.
Her mother got 48 / 4 = <<48/4=12>>12 strawberries.
The pie got 48 - 12 = <<48-12=36>>36 strawberries.
#### 36

Question: A concert hall has 32 rows with 25 seats in each row. If 715 tickets are sold, how many seats are empty?
Answer: The hall has 32 * 25 = <<32*25=800>>800 seats.
There are 800 - 715 = <<800-715=85>>85 empty seats.
#### 85

Question: Daniel scored 82, 91 and 77 on three tests. What score does he need on the fourth test to have an average of 85?
Answer: For an average of 85 over four tests he needs 85 * 4 = <<85*4=340>>340 points.
So far he has 82 + 91 + 77 = <<82+91+77=250>>250 points.
He needs 340 - 250 = <<340-250=90>>90 on the fourth test.
#### 90

Question: A rope is 18 meters long. It is cut into pieces that are each 75 centimeters long. How many pieces are there?
Answer: The rope is 18 * 100 = <<18*100=1800>>1800 centimeters long.
There are 1800 / 75 = <<1800/75=24>>24 pieces.
#### 24

Question: Mia's phone plan costs $35 a month plus $0.10 for every text message over 200. Last month she sent 340 messages. What was her bill?
Answer: She sent 340 - 200 = <<340-200=140>>140 extra messages.
They cost 140 * 0.10 = $<<140*0.10=14>>14.
Her bill was 35 + 14 = $<<35+14=49>>49.
#### 49

Question: A store sells juice for $2.40 a bottle, or a pack of 6 bottles for $12. How much does a customer save per bottle by buying the pack?
Answer: In the pack each bottle costs 12 / 6 = $<<12/6=2>>2.
The saving is 2.40 - 2 = $<<2.40-2=0.40>>0.40 per bottle.
#### 0.40

Question: Liam is three times as old as his son. In 12 years he will be twice as old as his son. How old is Liam now?
Answer: Let the son be s years old, so Liam is 3s. In 12 years, 3s + 12 = 2(s + 12), so 3s + 12 = 2s + 24 and s = 12.
Liam is 3 * 12 = <<3*12=36>>36 years old.
#### 36

Question: A swimming pool is filled by two pipes. One fills 40 liters per minute and the other 25 liters per minute. How long does it take to fill 2,600 liters?
Answer: Together they fill 40 + 25 = <<40+25=65>>65 liters per minute.
It takes 2600 / 65 = <<2600/65=40>>40 minutes.
#### 40

Question: Hannah has twice as many books as Jack, and Jack has 9 fewer books than Zoe. Zoe has 21 books. How many books do the three have together?
Answer: Jack has 21 - 9 = <<21-9=12>>12 books.
Hannah has 12 * 2 = <<12*2=24>>24 books.
Together they have 21 + 12 + 24 = <<21+12+24=57>>57 books.
#### 57

Question: A factory produces 450 toys per day. Five percent of them are defective. How many good toys does it produce in 6 days?
Answer: Each day 450 * 0.05 = <<450*0.05=22.5>>22.5 toys are defective on average, so 450 - 22.5 = <<450-22.5=427.5>>427.5 are good.
In 6 days it makes 427.5 * 6 = <<427.5*6=2565>>2565 good toys.
#### 2565

Question: Sophie runs 5 kilometers on Monday, and each day after that she runs 2 kilometers more than the day before. How far does she run from Monday to Friday?
Answer: She runs 5, 7, 9, 11 and 13 kilometers.
The total is 5 + 7 + 9 + 11 + 13 = <<5+7+9+11+13=45>>45 kilometers.
#### 45

Question: A classroom needs 6 tables, each with 4 chairs. Chairs cost $18 and tables cost $65. What is the total cost?
Answer: There are 6 * 4 = <<6*4=24>>24 chairs costing 24 * 18 = $<<24*18=432>>432.
The tables cost 6 * 65 = $<<6*65=390>>390.
The total is 432 + 390 = $<<432+390=822>>822.
#### 822

Question: An airplane flies 2,700 kilometers in 4.5 hours. What is its average speed?
Answer: Its speed is 2700 / 4.5 = <<2700/4.5=600>>600 kilometers per hour.
#### 600
`;

const XML_ANSWERS = `<reasoning>
There are 24 apples and 3 baskets. Each basket gets the same number, so each basket has 24 / 3 = 8 apples.
</reasoning>
<answer>
8
</answer>

<reasoning>
Lisa starts with 50 dollars. She spends 18 dollars on a book and 7 dollars on lunch. 18 + 7 = 25, and 50 - 25 = 25.
</reasoning>
<answer>
25
</answer>

<reasoning>
A week has 7 days. If Carlos swims 2 kilometers each day, he swims 7 * 2 = 14 kilometers in a week.
</reasoning>
<answer>
14
</answer>

<reasoning>
The rectangle is 9 meters long and 4 meters wide. Its area is 9 * 4 = 36 square meters, and its perimeter is 2 * (9 + 4) = 26 meters.
</reasoning>
<answer>
36
</answer>

<reasoning>
Half of 90 is 45. A third of 90 is 30. Together that is 45 + 30 = 75, so 90 - 75 = 15 are left.
</reasoning>
<answer>
15
</answer>

<reasoning>
First find the cost of one ticket: 96 / 8 = 12. Then five tickets cost 5 * 12 = 60.
</reasoning>
<answer>
60
</answer>
`;

const MORE_XML_ANSWERS = `<reasoning>
Each box holds 12 eggs and there are 7 boxes, so there are 12 * 7 = 84 eggs. Five eggs broke, which leaves 84 - 5 = 79 eggs.
</reasoning>
<answer>
79
</answer>

<reasoning>
The movie started at 6:45 and lasted 1 hour and 50 minutes. 6:45 plus 1 hour is 7:45, plus 50 minutes is 8:35.
</reasoning>
<answer>
8:35
</answer>

<reasoning>
Three friends share a bill of 87 dollars equally. Each pays 87 / 3 = 29 dollars.
</reasoning>
<answer>
29
</answer>

<reasoning>
The price was 80 dollars and the discount is 15 percent. 15 percent of 80 is 0.15 * 80 = 12, so the new price is 80 - 12 = 68 dollars.
</reasoning>
<answer>
68
</answer>

<reasoning>
Kevin has 4 quarters, 3 dimes and 6 nickels. That is 4 * 25 + 3 * 10 + 6 * 5 = 100 + 30 + 30 = 160 cents.
</reasoning>
<answer>
160
</answer>
`;

const CHAT = `<|im_start|>system
You are a helpful assistant. Respond in the following format:
<reasoning>
...
</reasoning>
<answer>
...
</answer><|im_end|>
<|im_start|>user
What is 7 times 8?<|im_end|>
<|im_start|>assistant
<reasoning>
7 * 8 = 56.
</reasoning>
<answer>
56
</answer><|im_end|>
<|im_start|>user
Can you help me plan a short trip?<|im_end|>
<|im_start|>assistant
Of course! Where would you like to go, and how many days do you have?<|im_end|>
User: How do I sort a list in Python?
Assistant: Use sorted(items) to get a new list, or items.sort() to sort it in place.
User: Thanks, that's exactly what I needed.
Assistant: You're welcome. Let me know if you have more questions.
`;

const CODE = `function add(a, b) {
  return a + b;
}

const total = [1, 2, 3, 4, 5].reduce((sum, x) => sum + x, 0);
console.log(\`total = \${total}\`);

export interface Point { x: number; y: number }

for (let i = 0; i < 10; i++) {
  if (i % 2 === 0) continue;
  process.stdout.write(String(i) + '\\n');
}

def mean(values):
    """Return the arithmetic mean of a non-empty list."""
    return sum(values) / len(values)

if __name__ == "__main__":
    print(mean([2, 4, 6, 8]))  # 5.0

import json
with open("data.json") as f:
    data = json.load(f)
print(data["name"], data.get("age", 0))

SELECT name, COUNT(*) AS n FROM orders WHERE price > 10.5 GROUP BY name ORDER BY n DESC;

{"role": "user", "content": "Hello!"}
{"id": 42, "tags": ["a", "b"], "ok": true, "score": null}

$ npm install && npm test
$ git log --oneline -n 5
<div class="note"><p>Hello, <b>world</b>!</p></div>
x = y * (z + 1) - w / 2; a[i] += b[j] ** 2; flag = !done && (n >= 3 || m <= -1);
`;

const MORE_CODE = `type Role = 'system' | 'user' | 'assistant';
interface Message { role: Role; content: string }

async function fetchJson<T>(url: string): Promise<T> {
  const response = await fetch(url, { headers: { 'content-type': 'application/json' } });
  if (!response.ok) throw new Error(\`request failed with status \${response.status}\`);
  return (await response.json()) as T;
}

class Counter {
  private value = 0;
  increment(step = 1): number {
    this.value += step;
    return this.value;
  }
}

const words = text.split(/\\s+/).filter((w) => w.length > 0);
const counts = new Map<string, number>();
for (const word of words) counts.set(word, (counts.get(word) ?? 0) + 1);

class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        if not self.items:
            raise IndexError("pop from empty stack")
        return self.items.pop()

def fibonacci(n: int) -> list[int]:
    seq = [0, 1]
    while len(seq) < n:
        seq.append(seq[-1] + seq[-2])
    return seq[:n]

numbers = [x * x for x in range(10) if x % 3 == 0]
result = {"sum": sum(numbers), "max": max(numbers), "min": min(numbers)}

#include <stdio.h>
int main(void) {
    int total = 0;
    for (int i = 1; i <= 100; ++i) total += i;
    printf("%d\\n", total);
    return 0;
}

fn main() {
    let v: Vec<u32> = (1..=10).collect();
    println!("{:?}", v.iter().sum::<u32>());
}

curl -s http://localhost:8000/v1/chat/completions -H "Content-Type: application/json" -d '{"model": "default", "messages": [{"role": "user", "content": "Hi"}]}'
export PATH="$HOME/.local/bin:$PATH"
ls -la /tmp | grep -v cache | sort -k 5 -n
`;

const NUMBERS = `0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25
30 40 50 60 70 80 90 100 125 150 200 250 300 365 400 500 750 1000 1024 2048 4096 10000 65536 1000000
3.14 2.5 0.75 1/2 3/4 -7 +12 50% 99.9% $4.99 $120 1,250 12:30 2024-05-17 #1 #2 (a) (b) [1] [2]
1 + 1 = 2, 2 * 3 = 6, 10 - 4 = 6, 12 / 4 = 3, 7^2 = 49, sqrt(81) = 9, 15 % 4 = 3.
Punctuation: . , ; : ! ? ' " ( ) [ ] { } < > / \\ | - _ = + * & ^ % $ # @ ~ \`
Dashes — and – and quotes “like this” and ‘like this’… and a bullet • here.
`;

const OTHER_SCRIPTS = `Café, naïve, résumé, façade, jalapeño, Zürich, Grüße, smørbrød, Łódź, São Paulo.
Привет, мир! Как дела? Спасибо.
Γειά σου κόσμε. Ευχαριστώ.
你好，世界！我们一起学习数学。今天天气很好。
こんにちは、世界。ありがとうございます。
안녕하세요, 세계. 감사합니다.
مرحبا بالعالم. शुक्रिया. שלום עולם.
Bonjour tout le monde. Je voudrais un café, s'il vous plaît. Où est la gare ?
Hola, ¿cómo estás? Muy bien, gracias. ¡Hasta mañana!
Guten Morgen! Wie geht es Ihnen? Danke schön, sehr gut.
Olá, tudo bem? Obrigado pela ajuda.
Merhaba dünya. Teşekkür ederim.
Xin chào thế giới. Cảm ơn bạn.
数学很有趣。小明有五个苹果，他吃了两个，还剩三个。
Emoji: 😀 👍 🎉 ❤️ 🚀 👩‍💻 🇺🇸 ✅ ✨
`;

export const BPE_CORPUS = [
  PROSE,
  MORE_PROSE,
  WORD_PROBLEMS,
  MORE_WORD_PROBLEMS,
  XML_ANSWERS,
  MORE_XML_ANSWERS,
  CHAT,
  CODE,
  MORE_CODE,
  NUMBERS,
  OTHER_SCRIPTS,
].join('\n');
